"""Policies built from a ``model`` config node (its schemas: :mod:`vla_kd.policies.model_configs`),
sized and normalised from a dataset."""
from __future__ import annotations

import logging

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.errors import UserError, unknown_name
from vla_kd.nn.normalization import feature_mask
from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert
from vla_kd.policies.hf_vla import HFVLA, HFVLAConfig
from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy
from vla_kd.policies.model_configs import MODEL_SCHEMAS
from vla_kd.policies.pretrained import PretrainedPolicy
from vla_kd.policies.smollm2 import init_trunk_from_smollm2
from vla_kd.policies.tactile_expert import TactileExpertConfig, TactileFlowExpert
from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

log = logging.getLogger(__name__)


def privileged_aux_dim(model, dataset: LeRobotDataset, cameras: list[str]) -> int:
    """Width of the auxiliary privileged-state target (0 when ``model.aux_privileged_weight``
    is 0); a clear error when the dataset cannot supply it."""
    if model.aux_privileged_weight <= 0:
        return 0
    if dataset.env_states is None or not cameras:
        raise UserError(
            "model.aux_privileged_weight > 0 needs a dataset with camera frames and "
            "observation.environment_state (the privileged vector that `vla-kd demos` records)"
        )
    return int(dataset.env_states.shape[1])


def chosen_state_features(model, state_dim: int) -> tuple[int, ...] | None:
    """``model.state_features`` checked against the dataset's state width (None: all)."""
    if model.state_features is None:
        return None
    chosen = tuple(int(i) for i in model.state_features)
    try:
        feature_mask(state_dim, chosen)  # the models' own check, reported against the dataset
    except ValueError:
        raise UserError(f"model.state_features={list(chosen)} must be distinct indices into the "
                        f"dataset's {state_dim}-wide observation.state") from None
    return chosen


def build_model(model, dataset: LeRobotDataset, tactile_token_dim: int = 0) -> PretrainedPolicy:
    """The policy the ``model`` node describes (one of ``MODEL_SCHEMAS``), sized and normalised
    from ``dataset``; ``tactile_token_dim`` gives a token_vla or hf_vla HapticVLA student's
    predicted tactile token."""
    cameras = [k for k in dataset.camera_keys if k.endswith(".rgb")]
    image_size = dataset.info["features"][cameras[0]]["shape"][0] if cameras else 128
    state_dim = dataset.states.shape[1]
    state_stats = dataset.feature_stats("observation.state")
    aux_dim = privileged_aux_dim(model, dataset, cameras)
    aux_stats = dataset.feature_stats("observation.environment_state") if aux_dim else None
    features = chosen_state_features(model, state_dim)
    if model.type == "chunked_bc":
        policy = ChunkedBCPolicy(ChunkedBCConfig(
            state_dim=state_dim, horizon=model.horizon, image_size=image_size,
            use_image=model.use_image and bool(cameras), hidden=model.hidden,
            image_pooling=model.image_pooling, aux_state_dim=aux_dim, state_features=features,
        ))
        policy.set_normalization(state_stats, dataset.feature_stats("action"), aux_stats)
        return policy
    if model.type == "token_vla":
        if not cameras:
            raise UserError("token_vla needs a dataset with an rgb camera")
        vla_cameras, vla_image_size = dataset.cameras(model.cameras)
        policy = TokenVLA(TokenVLAConfig(
            state_dim=state_dim, horizon=model.horizon, cameras=vla_cameras,
            action_stride=model.action_stride, image_size=vla_image_size,
            vision=model.vision, patch_grid=model.patch_grid,
            hidden=model.hidden, layers=model.layers, heads=model.heads, intermediate=model.intermediate,
            kv_heads=model.kv_heads, rope_theta=model.rope_theta, rms_norm_eps=model.rms_norm_eps,
            trunk=model.trunk, aux_state_dim=aux_dim, state_features=features,
            tactile_token_dim=tactile_token_dim,
        ))
        if model.trunk == "smollm2":
            log.info("trunk initialised from SmolLM2-135M: %s", init_trunk_from_smollm2(policy))
        policy.set_normalization(state_stats, dataset.actions, aux_stats)
        return policy
    if model.type == "hf_vla":
        return build_hf_vla(model, dataset, state_dim, features, aux_dim, aux_stats, tactile_token_dim)
    if model.type == "diffusion_action_expert":
        expert_cameras, expert_image_size = dataset.cameras(model.cameras)
        policy = DiffusionActionExpert(ActionExpertConfig(
            state_dim=state_dim, horizon=model.horizon, cameras=expert_cameras,
            image_size=expert_image_size, features=model.features, hidden=model.hidden,
            train_timesteps=model.train_timesteps, inference_steps=model.inference_steps,
            image_pooling=model.image_pooling, aux_state_dim=aux_dim,
            prediction_type=model.prediction_type, state_features=features,
        ))
        policy.set_normalization(state_stats, dataset.feature_stats("action"), aux_stats)
        return policy
    if model.type == "tactile_flow_expert":
        return build_tactile_expert(model, dataset, state_dim, features, aux_dim, aux_stats)
    raise unknown_name("model", model.type, MODEL_SCHEMAS)


def build_hf_vla(
    model, dataset: LeRobotDataset, state_dim: int, features, aux_dim: int, aux_stats: dict | None,
    tactile_token_dim: int = 0,
) -> HFVLA:
    """A user's pretrained VLM (``model.checkpoint``) as an ``hf_vla`` policy for the dataset."""
    if not model.checkpoint:
        raise UserError("model=hf_vla needs model.checkpoint=<a local Hugging Face VLM folder> "
                        "(`vla-kd make-vlm` builds a small one)")
    cameras, image_size = dataset.cameras(model.cameras)
    policy = HFVLA.from_checkpoint(model.checkpoint, HFVLAConfig(
        state_dim=state_dim, horizon=model.horizon, cameras=cameras, image_size=image_size,
        state_features=features, prompt=model.prompt, trust_remote_code=model.trust_remote_code,
        dtype=model.dtype, lora_rank=model.lora_rank, lora_alpha=model.lora_alpha,
        lora_dropout=model.lora_dropout, lora_targets=tuple(model.lora_targets), aux_state_dim=aux_dim,
        tactile_token_dim=tactile_token_dim,
    ))
    policy.set_normalization(dataset.feature_stats("observation.state"), dataset.actions, dataset.states,
                             aux_stats)
    return policy


def build_tactile_expert(
    model, dataset: LeRobotDataset, state_dim: int, features, aux_dim: int, aux_stats: dict | None
) -> TactileFlowExpert:
    """HapticVLA's teacher for a dataset recorded with touch."""
    if dataset.tactile is None:
        raise UserError(f"model=tactile_flow_expert reads touch: '{dataset.root}' has no "
                        "observation.tactile (record it with `vla-kd demos ... tactile=true`)")
    cameras, image_size = dataset.cameras(model.cameras)
    policy = TactileFlowExpert(TactileExpertConfig(
        state_dim=state_dim, horizon=model.horizon, cameras=cameras, image_size=image_size,
        features=model.features, hidden=model.hidden, inference_steps=model.inference_steps,
        image_pooling=model.image_pooling, aux_state_dim=aux_dim, state_features=features,
        tactile_dim=int(dataset.tactile.shape[1]), tactile_token_dim=model.tactile_token_dim,
        prediction_type=model.prediction_type,
    ))
    policy.set_normalization(dataset.feature_stats("observation.state"), dataset.feature_stats("action"),
                             dataset.feature_stats("observation.tactile"), aux_stats)
    return policy
