"""The paper's stages. Each is ``run(context) -> metrics``; names as used in a recipe's ``stages:``."""

STAGES: dict[str, str] = {
    "pretrain": "sava_core.stages.pretrain:run",
    "align": "sava_core.stages.align:run",
    "finetune": "sava_core.stages.finetune:run",
    "generate": "sava_core.stages.cascade:run",
}
