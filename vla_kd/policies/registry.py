"""Which class loads a saved policy folder: its ``policy_type`` (in ``config.json``) names a
``module:Class``. Names only, so reading a folder's type imports no model code; a new policy
type is one line here."""
from __future__ import annotations

import importlib

from vla_kd.errors import unknown_name

POLICY_TYPES: dict[str, str] = {
    "chunked_bc": "vla_kd.policies.mlp_bc:ChunkedBCPolicy",
    "token_vla": "vla_kd.policies.token_vla:TokenVLA",
    "diffusion_action_expert": "vla_kd.policies.action_expert:DiffusionActionExpert",
    "gaussian_student": "vla_kd.policies.gaussian_mlp:GaussianStudent",
    "skip_vla": "vla_kd.policies.skip_vla:SkipVLA",
    "skip_hf_vla": "vla_kd.policies.skip_vla:SkipHFVLA",
    "aligned_vla": "vla_kd.policies.aligned_vla:AlignedVLA",
    "hf_vla": "vla_kd.policies.hf_vla:HFVLA",
    "tactile_flow_expert": "vla_kd.policies.tactile_expert:TactileFlowExpert",
}

#: the policies that implement the token-teacher protocol (vla_kd.policies.token_policy): every
#: token-level distillation method takes any of them as its teacher
TOKEN_POLICY_TYPES = ("token_vla", "hf_vla")
#: the DySL students of those teachers
SKIP_POLICY_TYPES = ("skip_vla", "skip_hf_vla")
#: students that predict continuous chunks from camera + proprio in one pass (OPD's, BC clones)
ACTION_STUDENT_TYPES = ("chunked_bc", "diffusion_action_expert")
#: policies that read ``obs["tactile"]`` (teachers only: a student never reads touch)
TACTILE_POLICY_TYPES = ("tactile_flow_expert",)


def check_policy_type(policy_type: str, where: str) -> None:
    """A one-line error when ``policy_type`` (read from ``where``) names no known class."""
    if policy_type not in POLICY_TYPES:
        raise unknown_name(f"policy_type in {where}", policy_type, POLICY_TYPES)


def policy_class(policy_type: str, where: str = "a saved policy") -> type:
    """The class that saves and loads ``policy_type`` folders (imported on first use)."""
    check_policy_type(policy_type, where)
    module, name = POLICY_TYPES[policy_type].split(":")
    return getattr(importlib.import_module(module), name)
