"""AudioLDM2's text conditioning as one text encoder (``audioldm2_text``).

The modules of an AudioLDM2 pipeline (CLAP ``ClapModel``, Flan-T5 ``T5EncoderModel``,
``AudioLDM2ProjectionModel``, GPT-2 ``GPT2LMHeadModel`` and their tokenizers) run through the
pipeline's own ``AudioLDM2Pipeline.encode_prompt`` (an ``AudioLDM2Pipeline`` holding only these
modules), which returns the T5 hidden states (B, N5, d_t5) with their mask and the
``GENERATED_TOKENS`` (8) hidden states GPT-2 generates from [CLAP ; T5] (B, 8, d_gpt2).

Packing into one token sequence (B, 8 + N5, D), D = max(d_gpt2, d_t5) (1024 for the released
models: GPT-2 768, Flan-T5-large 1024):

* tokens [0, 8): the GPT-2 generated embeddings in channels [0, d_gpt2), zeros above;
* tokens [8, 8 + N5): the T5 hidden states in channels [0, d_t5), zeros above; mask = T5's mask.

The ``audioldm2`` backbone splits the sequence at the fixed index 8 and feeds the GPT-2 stream
(``encoder_hidden_states``) and the T5 stream (``encoder_hidden_states_1``) of its UNet, exactly as
the pipeline does. ``pooled`` is the mean of the 8 generated embeddings (zero-padded to D).

The tiny preset builds the same classes: CLAP (RoBERTa width 24, projection 16), T5 (d_model 32),
GPT-2 (n_embd 24), so D = 32, with tokenizers from ``tiny_tokenizer``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sava_audioldm.params import AudioLDM2TextParams
from sava_clap.models import TINY_MAX_TOKENS, tiny_clap_model, tiny_clap_tokenizer
from sava_core.contracts import TextEmbedding, TextEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate, tiny_tokenizer, torch_dtype

#: Hidden states GPT-2 generates per prompt: AudioLDM2's ``sequence_gen_length`` (the UNets were trained with 8).
GENERATED_TOKENS = 8
#: Widths of the tiny preset's GPT-2 and T5 (the tiny ``audioldm2`` backbone cross-attends to these).
TINY_GPT2_DIM, TINY_T5_DIM = 24, 32

SETTING = "model.audio_text_encoder.params.pretrained"


def tiny_modules() -> dict[str, Any]:
    """Seeded tiny versions of the AudioLDM2 text modules (the pipeline's names as keys)."""
    from diffusers import AudioLDM2ProjectionModel
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5EncoderModel

    clap = tiny_clap_model()
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=300, d_model=TINY_T5_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=4))
    positions = 3 + TINY_MAX_TOKENS + 2 + GENERATED_TOKENS  # [sos, CLAP, eos] + [sos, T5, eos] + generated
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=TINY_GPT2_DIM, n_layer=1, n_head=2, bos_token_id=0,
                                      eos_token_id=0, n_positions=positions))
    projection = AudioLDM2ProjectionModel(text_encoder_dim=clap.config.projection_dim,
                                          text_encoder_1_dim=TINY_T5_DIM, langauge_model_dim=TINY_GPT2_DIM)
    return {"text_encoder": clap, "text_encoder_2": t5, "projection_model": projection, "language_model": gpt2,
            "tokenizer": tiny_clap_tokenizer(), "tokenizer_2": tiny_tokenizer("t5", model_max_length=TINY_MAX_TOKENS)}


def load_modules(root: Path, dtype: torch.dtype) -> dict[str, Any]:
    """The AudioLDM2 text modules from a pipeline directory."""
    from diffusers import AudioLDM2ProjectionModel
    from transformers import AutoTokenizer, ClapModel, GPT2LMHeadModel, T5EncoderModel

    classes = {"text_encoder": ClapModel, "text_encoder_2": T5EncoderModel,
               "projection_model": AudioLDM2ProjectionModel, "language_model": GPT2LMHeadModel}
    missing = [name for name in [*classes, "tokenizer", "tokenizer_2"] if not (root / name).is_dir()]
    if missing:
        raise SavaError(f"{SETTING}: {root} has no {', '.join(missing)}; point it at an AudioLDM2 pipeline directory "
                        "(e.g. a download of cvssp/audioldm2)")
    second = root / "text_encoder_2" / "config.json"
    kind = json.loads(second.read_text()).get("model_type") if second.is_file() else None
    if kind != "t5":
        raise SavaError(f"{SETTING}: text_encoder_2 of {root} is {kind or 'missing'}, not T5; only the text-to-audio "
                        "checkpoints (Flan-T5) are supported, not the text-to-speech ones (VITS)")
    try:
        modules = {name: cls.from_pretrained(root / name, dtype=dtype) for name, cls in classes.items()}
        modules |= {name: AutoTokenizer.from_pretrained(root / name) for name in ("tokenizer", "tokenizer_2")}
    except (OSError, ValueError) as err:
        raise SavaError(f"{SETTING}: cannot load the AudioLDM2 text modules from {root}: {err}") from None
    return modules


class AudioLDM2Text(TextEncoder):
    """f_t for AudioLDM2: prompts -> packed [GPT-2 generated ; T5] tokens (B, 8 + N5, dim); see the
    module docstring for the layout. ``language_model_dim`` and ``t5_dim`` are the two widths."""

    Params = AudioLDM2TextParams

    def __init__(self, params: AudioLDM2TextParams):
        super().__init__()
        from diffusers import AudioLDM2Pipeline

        self.params = params
        if params.preset == "tiny":
            modules = {name: cast(module, params.dtype) if isinstance(module, torch.nn.Module) else module
                       for name, module in tiny_modules().items()}
        else:
            modules = load_modules(Path(locate(params.pretrained, SETTING, must_contain="text_encoder_2")),
                                   torch_dtype(params.dtype))
        self.clap, self.t5 = modules["text_encoder"], modules["text_encoder_2"]
        self.projection, self.language_model = modules["projection_model"], modules["language_model"]
        self.pipeline = AudioLDM2Pipeline(vae=None, feature_extractor=None, unet=None, scheduler=None, vocoder=None,
                                          **modules)
        self.language_model_dim = int(self.language_model.config.n_embd)
        self.t5_dim = int(self.t5.config.d_model)
        self.dim = max(self.language_model_dim, self.t5_dim)
        #: Tokens per prompt at most: the generated ones and T5's, padded to the longest prompt up to its limit.
        self.max_length = GENERATED_TOKENS + int(modules["tokenizer_2"].model_max_length)
        self.requires_grad_(False).eval()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbedding:
        device = self.t5.device
        with warnings.catch_warnings():  # the pipeline still passes `past_key_values`, which transformers 5 deprecates
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            t5, t5_mask, generated = self.pipeline.encode_prompt(list(prompts), device, num_waveforms_per_prompt=1,
                                                                 do_classifier_free_guidance=False,
                                                                 max_new_tokens=GENERATED_TOKENS)
        widen = lambda x: F.pad(x, (0, self.dim - x.shape[-1]))  # noqa: E731
        tokens = torch.cat([widen(generated), widen(t5.to(generated.dtype))], dim=1)
        mask = torch.cat([torch.ones(len(prompts), GENERATED_TOKENS, dtype=torch.bool, device=device),
                          t5_mask.bool()], dim=1)
        return TextEmbedding(tokens, mask, widen(generated.mean(1)))
