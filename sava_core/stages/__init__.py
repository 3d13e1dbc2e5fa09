"""The paper's stages, as registered :class:`sava_core.stage.Stage` s (kind ``stage``): ``align``
(Stage I and P_theta), ``finetune`` (Stage II), ``generate`` (Stage III). Each module builds on the
toolkit (:mod:`sava_core.alignment`, :mod:`sava_core.conditioning`, :mod:`sava_core.generators`,
:mod:`sava_core.pipeline`, ...) and imports no other stage; each imports torch only when it runs."""
