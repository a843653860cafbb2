"""``vla-kd make-vlm``: a small randomly initialised vision-language model of a real architecture
(Idefics3/SmolVLM or PaliGemma), saved as a Hugging Face folder that ``model=hf_vla`` fine-tunes."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.errors import UserError
from vla_kd.policies.vlm_maker import VLMSpec, make_vlm

CONFIG_NAME = "make_vlm"


@dataclass
class MakeVLMCommandConfig(VLMSpec):
    """``configs/make_vlm.yaml``: the model's architecture and sizes (``VLMSpec``) and its folder."""

    output: str = "${hydra:runtime.output_dir}/vlm"
    overwrite: bool = False


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=MakeVLMCommandConfig)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise UserError(f"make-vlm: '{output}' exists (overwrite=true replaces it)")
    fields = OmegaConf.to_container(cfg, resolve=True)
    spec = VLMSpec(**{k: v for k, v in fields.items() if k not in ("output", "overwrite")})
    folder = make_vlm(output, spec)
    doc = {"folder": str(folder), "architecture": spec.architecture, "text_weights": spec.text_weights}
    print(json.dumps(doc, indent=2))
    return doc


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
