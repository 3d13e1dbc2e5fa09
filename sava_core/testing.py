"""A test kit for plug-in authors (in the spirit of diffusers' tester mixins).

Subclass :class:`ComponentTests` in a pytest module, say which registered component to build and
give tiny inputs; the kit checks the contract::

    from sava_core.testing import ComponentTests

    class TestMyAdapter(ComponentTests):
        kind, name = "adapter", "my_adapter"
        params = {"hidden": 8}
        runtime = {"in_dim": 6, "out_dim": 4}

        def inputs(self):
            return (torch.randn(2, 3, 6),)

        expected_shape = (2, 3, 4)

Checks: the name is registered through a plug-in, the class subclasses its kind's contract, the
parameter model is a pydantic model that rejects unknown keys and is the class's ``Params``, the
output has the expected shape and a floating dtype (a :class:`Mask` also stays in [0, 1], and its
regulariser is a finite scalar >= 0 with a gradient into the mask's parameters), and building and
calling twice under the same seed gives identical outputs.

A metric's ``inputs()`` returns ``(generated,)`` or, when it ``needs_reference``,
``(generated, reference)``: lists of :class:`sava_core.clips.MediaItem`. The kit builds the
reference statistics with ``reference_stats`` and checks the :class:`Score` instead of a tensor:
finite float values, a JSON-serialisable protocol, ``needs`` within video / audio / caption, the
same values under the same seed. Metrics get the registries as their runtime argument.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, get_args

import pytest
import torch
from pydantic import BaseModel, ValidationError

from sava_core.contracts import Metric, MetricInput, Score
from sava_core.registry import KINDS, get_registries, import_target


def call_component(kind: str, component: Any, inputs: tuple[Any, ...]) -> Any:
    """Invoke a component the way the stages do, by kind."""
    if kind in ("video_encoder", "audio_encoder", "text_encoder"):
        return component.encode(*inputs)
    if kind == "dataset":
        return component.latents(*inputs) if component.provides_latents else component.media(*inputs)[0]
    if kind == "metric":
        generated, *reference = inputs
        stats = component.reference_stats(reference[0]) if component.needs_reference else None
        return component.compute(generated, stats)
    if kind == "extractor":
        return component.extract(*inputs)
    if kind == "sampler":
        return component.sample(*inputs)
    return component(*inputs)


def first_tensor(output: Any) -> torch.Tensor:
    """The main tensor of an output (a tensor, a dataclass with tensors, or a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("tokens", "video", "embeddings", "sample", "latents"):
        if isinstance(getattr(output, attr, None), torch.Tensor):
            return getattr(output, attr)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the output tensor in {type(output).__name__}; override `output_tensor`")


class ComponentTests:
    """Contract tests for one registered component. Set the class attributes and :meth:`inputs`."""

    kind: ClassVar[str]
    name: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    runtime: ClassVar[dict[str, Any]] = {}
    expected_shape: ClassVar[tuple[int, ...] | None] = None
    seed: ClassVar[int] = 0

    def inputs(self) -> tuple[Any, ...]:
        """Tiny inputs for one call (built fresh each time, under the kit's seed)."""
        raise NotImplementedError("return a tuple of inputs for one call of the component")

    def output_tensor(self, output: Any) -> torch.Tensor:
        return first_tensor(output)

    # -- helpers -------------------------------------------------------------------------------

    def build(self) -> Any:
        torch.manual_seed(self.seed)
        registries = get_registries()
        runtime = {"registries": registries, **self.runtime} if self.kind == "metric" else self.runtime
        component = registries[self.kind].build(self.name, self.params, **runtime)
        if isinstance(component, torch.nn.Module):
            component.eval()
        return component

    def call_once(self) -> Any:
        """One call of a freshly built component, under the kit's seed, without gradients."""
        component = self.build()
        torch.manual_seed(self.seed + 1)
        with torch.no_grad():
            return call_component(self.kind, component, self.inputs())

    def run_once(self) -> torch.Tensor:
        return self.output_tensor(self.call_once())

    # -- the checks ----------------------------------------------------------------------------

    def test_registered_through_a_plugin(self) -> None:
        entry = get_registries()[self.kind].get(self.name)
        assert entry.origin.plugin and entry.origin.distribution

    def test_follows_its_contract(self) -> None:
        assert self.kind in KINDS
        cls = get_registries()[self.kind].get(self.name).load()
        assert issubclass(cls, import_target(KINDS[self.kind]))

    def test_params_model(self) -> None:
        entry = get_registries()[self.kind].get(self.name)
        model = entry.load_params()
        assert issubclass(model, BaseModel)
        assert getattr(entry.load(), "Params", model) is model, "the registered params model must be the class's Params"
        model.model_validate(self.params)
        with pytest.raises(ValidationError):
            model.model_validate({**self.params, "surely_not_a_parameter": 1})

    def test_output_shape_and_dtype(self) -> None:
        if self.kind == "metric":
            check_score(self.build(), self.call_once())
            return
        out = self.run_once()
        assert out.is_floating_point()
        assert torch.isfinite(out).all()
        if self.expected_shape is not None:
            assert tuple(out.shape) == tuple(self.expected_shape)
        if self.kind == "mask":
            assert out.min() >= 0 and out.max() <= 1
            self.check_regulariser()

    def test_deterministic_under_a_seed(self) -> None:
        if self.kind == "metric":
            assert self.call_once().values == self.call_once().values
            return
        assert torch.equal(self.run_once(), self.run_once())

    def check_regulariser(self) -> None:
        """A mask's sparsity term (Eq. 7) is a finite scalar >= 0 that trains the mask."""
        mask = self.build().train()
        torch.manual_seed(self.seed + 1)
        own, partner = self.inputs()
        penalty = mask.regulariser(own, partner, mask(own, partner))
        assert penalty.dim() == 0 and torch.isfinite(penalty) and penalty >= 0
        if not mask.is_identity:
            penalty.backward()
            grads = [p.grad for p in mask.parameters() if p.requires_grad]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), "the regulariser trains nothing"


def check_score(metric: Metric, score: Any) -> None:
    """What ``sava eval`` requires of a metric's output (:class:`Score`) and declarations."""
    assert isinstance(score, Score), f"compute() must return a sava_core.contracts.Score, not {type(score).__name__}"
    assert score.values, "the score has no values"
    for key, value in score.values.items():
        assert isinstance(value, float | int) and not isinstance(value, bool), f"{key}: {value!r} is not a number"
        assert math.isfinite(value), f"{key}: {value} is not finite"
    json.dumps(score.protocol)  # the protocol is stored with every score
    assert set(metric.needs) <= set(get_args(MetricInput)), f"needs {set(metric.needs)}: use video, audio, caption"
    if metric.needs_reference:
        assert type(metric).reference_stats is not Metric.reference_stats, "needs_reference without reference_stats"
