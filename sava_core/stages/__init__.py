"""The paper's stages. Each is ``run(context) -> metrics``; names as used in a recipe's ``stages:``."""

STAGES: dict[str, str] = {
    "align": "sava_core.stages.align:run",
}
