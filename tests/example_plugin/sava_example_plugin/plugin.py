"""Registration: kept free of torch imports so `sava list` stays fast."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry):
    registry.register(
        "adapter",
        "gated_linear",
        "sava_example_plugin.adapter:GatedLinearAdapter",
        params="sava_example_plugin.params:GatedLinearParams",
        summary="example plug-in: linear map times a sigmoid gate",
    )
    registry.register("metric", "loudness_gap", "sava_example_plugin.metric:LoudnessGap",
                      params="sava_example_plugin.params:LoudnessGapParams",
                      summary="example plug-in: |generated - reference| mean RMS level, dB")
    registry.register("stage", "stage1_size", "sava_example_plugin.stage:Stage1Size",
                      summary="example plug-in: parameter counts of the trained Stage I model")
