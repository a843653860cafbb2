"""Load Hugging Face-format VLA checkpoints (OpenVLA-class) from a local folder.

For users who have real VLA weights on disk (nothing is downloaded: ``local_files_only``).
The folder is checked before transformers touches it, so a missing folder, a missing or
truncated weight shard, or an unreadable ``config.json`` is one clear line. OpenVLA maps its
256 action bins onto the last 256 vocabulary ids and un-normalises with per-dataset 1st/99th
percentiles; :func:`openvla_tokens_to_actions` reproduces that decoding.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open

from vla_kd.errors import UserError

#: transformers Auto classes tried, in order, for a checkpoint's architecture.
AUTO_CLASSES = ("AutoModelForVision2Seq", "AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files a checkpoint folder declares, all checked to exist and be readable."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as err:
            raise UserError(f"'{index}' is corrupt ({err})") from None
        files = [folder / name for name in shards]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"'{folder}' has no *.safetensors weights")
    for path in files:
        if not path.is_file():
            raise UserError(f"weight shard '{path.name}' named by '{index.name}' is missing from '{folder}'")
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises several error types for bad headers
            raise UserError(f"weight file '{path}' is corrupt: {err}") from None
    return files


def check_checkpoint(folder: str | Path) -> dict:
    """Validate a checkpoint folder; returns its parsed ``config.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder '{folder}' does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"'{folder}' is not a Hugging Face checkpoint: it has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"'{config_path}' is corrupt ({err})") from None
    weight_files(folder)
    return config


def load_hf_vla(folder: str | Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """Load a checkpoint with transformers, offline; returns the model in eval mode.

    OpenVLA checkpoints ship their own modelling code: pass ``trust_remote_code=True`` only for
    folders you trust.
    """

    check_checkpoint(folder)
    return from_auto_classes(folder, AUTO_CLASSES, trust_remote_code, dtype, "")


def from_auto_classes(folder: str | Path, names, trust_remote_code: bool, dtype: str, kind: str):
    """The model of the first transformers Auto class of ``names`` that loads ``folder`` (offline,
    in eval mode); one line naming every class's reason when none does (``kind``: what was
    wanted, e.g. " as an image-text-to-text model")."""
    errors = []
    for name in names:
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        try:
            model = auto.from_pretrained(str(folder), local_files_only=True,
                                         trust_remote_code=trust_remote_code, dtype=getattr(torch, dtype))
            return model.eval()
        except (ValueError, KeyError, OSError) as err:  # architecture not handled by this Auto class
            errors.append(f"{name}: {str(err).splitlines()[0]}")
    raise UserError(f"transformers cannot load '{folder}'{kind}: " + "; ".join(errors))


def load_vlm(folder: str | Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """A local image-text-to-text model and its processor, offline: ``(model, processor)``.

    Natively supported architectures (Idefics3/SmolVLM, PaliGemma, ...) load through
    ``AutoModelForImageTextToText``; OpenVLA-format folders ship their own modelling code and
    load only with ``trust_remote_code=True`` (also tried as ``AutoModelForVision2Seq``).
    """
    folder = Path(folder)
    config = check_checkpoint(folder)
    if "policy_type" in config:  # the suite's own config.json, not a transformers one
        raise UserError(f"'{folder}' is a saved vla_kd policy; pass its vlm/ folder, or use it as policy=")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"hf_vla: dtype={dtype} is not one of float32, bfloat16, float16")
    if config.get("auto_map") and not trust_remote_code:
        raise UserError(f"'{folder}' ships its own modelling code ({config.get('architectures')}): "
                        "load it only if you trust it, with model.trust_remote_code=true")
    names = ["AutoModelForImageTextToText"] + (["AutoModelForVision2Seq"] if trust_remote_code else [])
    kind = f" (model_type {config.get('model_type', '?')}) as an image-text-to-text model"
    model = from_auto_classes(folder, names, trust_remote_code, dtype, kind)
    # Without torchvision (which the CPU torch cannot sit beside) transformers falls back to the
    # PIL image processors and warns about it on every load; the fallback is the intended one.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        processor = transformers.AutoProcessor.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError, TypeError) as err:
        first_line = str(err).splitlines()[0]
        raise UserError(f"'{folder}' has no processor transformers can load: {first_line}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise UserError(f"'{folder}': its processor ({type(processor).__name__}) does not take images "
                        "and text")
    return model, processor


def action_vocab_end(processor, model, folder, n_bins: int = 256) -> int:
    """One past the id of action bin 0: the tokenizer's base vocabulary size (OpenVLA's rule; the
    processor's added image tokens come after it). One line when the vocabulary cannot hold
    ``n_bins`` action ids clear of the special tokens, or the model has no logits for them."""
    tokenizer = processor.tokenizer
    end = int(tokenizer.vocab_size)
    logits = model.get_output_embeddings().weight.shape[0]
    if end > logits:
        raise UserError(f"'{folder}': the tokenizer's {end} ids exceed the model's {logits} logits")
    special = set(tokenizer.all_special_ids) | {getattr(processor, "image_token_id", None)}
    clashing = sorted(i for i in special if i is not None and end - n_bins <= i < end)
    if end < 2 * n_bins or clashing:
        why = f"special tokens {clashing[:5]} sit among them" if clashing else f"only {end} ids"
        raise UserError(f"'{folder}': the vocabulary is too small for {n_bins} action ids "
                        f"at its end ({why})")
    return end


def openvla_tokens_to_actions(
    token_ids: np.ndarray, vocab_size: int, q01: np.ndarray, q99: np.ndarray, n_bins: int = 256,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """OpenVLA's decoding: id ``vocab_size - 1 - k`` is bin ``k``; bin centres of ``n_bins``
    uniform bins on [-1, 1] are un-normalised with the 1st/99th percentiles (dimensions with
    ``mask`` False, e.g. the gripper, are left normalised as OpenVLA does)."""
    bins = np.clip(vocab_size - 1 - np.asarray(token_ids), 0, n_bins - 2)
    centres = (np.linspace(-1, 1, n_bins)[:-1] + np.linspace(-1, 1, n_bins)[1:]) / 2
    normalized = centres[bins]
    q01, q99 = np.asarray(q01, np.float64), np.asarray(q99, np.float64)
    actions = 0.5 * (normalized + 1) * (q99 - q01) + q01
    if mask is not None:
        actions = np.where(np.asarray(mask, bool), actions, normalized)
    return actions
