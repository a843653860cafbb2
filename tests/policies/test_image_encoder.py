"""The CNN image encoder: keypoint (spatial-softmax) pooling and the unchanged flatten path."""

import numpy as np
import pytest
import torch

from vla_kd.errors import UserError
from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy, ConvEncoder, SpatialSoftmax


@pytest.mark.parametrize(("row", "col"), [(0, 0), (3, 7), (9, 2)])
def test_spatial_softmax_finds_a_peak(row: int, col: int) -> None:
    height, width = 10, 8
    maps = torch.zeros(2, 3, height, width)
    maps[:, :, row, col] = 50.0  # a sharp peak: the softmax puts almost all weight there
    keypoints = SpatialSoftmax(height, width)(maps).view(2, 3, 2)
    expected = torch.tensor([-1 + 2 * col / (width - 1), -1 + 2 * row / (height - 1)])
    assert torch.allclose(keypoints, expected.expand(2, 3, 2), atol=1e-4)


def test_spatial_softmax_of_a_flat_map_is_the_centre() -> None:
    keypoints = SpatialSoftmax(5, 5)(torch.zeros(1, 4, 5, 5))
    assert torch.allclose(keypoints, torch.zeros(1, 8), atol=1e-6)


def test_encoder_output_shapes_and_bad_pooling() -> None:
    images = torch.randint(0, 256, (3, 128, 128, 3), dtype=torch.uint8)
    for pooling in ("flatten", "spatial_softmax"):
        assert ConvEncoder(128, 32, pooling)(images).shape == (3, 32)
    with pytest.raises(UserError, match="image pooling"):
        ConvEncoder(128, 32, "max")


def test_flatten_encoder_keeps_the_parameter_names_of_saved_policies() -> None:
    # Policies saved before the pooling option existed must still load.
    names = set(ChunkedBCPolicy(ChunkedBCConfig(state_dim=4, image_size=64)).state_dict())
    assert {"image_encoder.net.0.weight", "image_encoder.net.2.weight", "image_encoder.net.4.weight",
            "image_encoder.project.0.weight"} <= names
    assert not any(".pool." in name for name in names)


def test_keypoint_policy_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    policy = ChunkedBCPolicy(ChunkedBCConfig(state_dim=4, image_size=64, image_pooling="spatial_softmax"))
    policy.save_pretrained(tmp_path / "p")
    loaded = ChunkedBCPolicy.from_pretrained(tmp_path / "p")
    state, rgb = torch.randn(2, 4), torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert torch.equal(policy(state, rgb), loaded(state, rgb))


def test_auxiliary_privileged_loss_teaches_the_encoder_to_locate() -> None:
    """The aux head learns a target that only the image carries (a bright square's position),
    and the policy still acts from rgb + proprio alone."""
    from vla_kd.methods.bc import ChunkedBC

    torch.manual_seed(0)
    policy = ChunkedBCPolicy(ChunkedBCConfig(state_dim=2, horizon=1, image_size=64, hidden=64,
                                             aux_state_dim=2, image_pooling="spatial_softmax"))
    policy.set_normalization({"mean": torch.zeros(2), "std": torch.ones(2)},
                             {"min": -torch.ones(7), "max": torch.ones(7)},
                             {"mean": torch.full((2,), 28.0), "std": torch.full((2,), 14.0)})
    method = ChunkedBC(policy, shift_pad=0, aux_weight=1.0)
    optimiser = torch.optim.Adam(policy.parameters(), 3e-3)

    def batch(n: int = 32) -> dict:
        where = torch.randint(4, 52, (n, 2))
        rgb = torch.zeros(n, 64, 64, 3, dtype=torch.uint8)
        for i, (r, c) in enumerate(where):
            rgb[i, r:r + 8, c:c + 8] = 255
        return {"observation.state": torch.zeros(n, 2), "observation.images.rgb": rgb,
                "action": torch.zeros(n, 1, 7), "action_is_pad": torch.zeros(n, 1, dtype=torch.bool),
                "observation.environment_state": where.float()}

    first = method.loss(batch(), 0)[1]["losses/aux_privileged"]
    for step in range(150):
        loss, logs = method.loss(batch(), step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert logs["losses/aux_privileged"] < 0.2 * first
    obs = {"state": torch.zeros(1, 2).numpy(), "rgb": batch(1)["observation.images.rgb"].numpy()}
    assert policy.predict_action_chunk(obs).shape == (1, 1, 7)


def test_aux_weight_needs_an_aux_head() -> None:
    from vla_kd.methods.bc import ChunkedBC

    with pytest.raises(ValueError, match="aux_state_dim"):
        ChunkedBC(ChunkedBCPolicy(ChunkedBCConfig(state_dim=2, image_size=64)), aux_weight=1.0)


def test_token_vla_auxiliary_head_trains_the_image_summary_and_leaves_decoding_alone(tmp_path) -> None:
    from vla_kd.methods.bc import TokenBC
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    torch.manual_seed(0)
    config = TokenVLAConfig(state_dim=3, horizon=2, image_size=64, hidden=32, layers=1, heads=2,
                            intermediate=64, aux_state_dim=2)
    policy = TokenVLA(config)
    policy.set_normalization({"mean": torch.zeros(3), "std": torch.ones(3)}, torch.rand(50, 7) * 2 - 1,
                             {"mean": torch.zeros(2), "std": torch.ones(2)})
    batch = {"observation.state": torch.randn(4, 3),
             "observation.images.rgb": torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8),
             "action": torch.rand(4, 2, 7) * 2 - 1, "action_is_pad": torch.zeros(4, 2, dtype=torch.bool),
             "observation.environment_state": torch.randn(4, 2), "task": ["pick up the cube"] * 4}
    loss, logs = TokenBC(policy, shift_pad=0, aux_weight=1.0).loss(batch, 0)
    plain, _ = TokenBC(policy, shift_pad=0).loss(batch, 0)
    assert logs["losses/aux_privileged"] > 0
    assert torch.isclose(loss, plain + logs["losses/aux_privileged"], rtol=1e-4)
    loss.backward()
    assert policy.aux_head.weight.grad is not None and policy.image_summary[0].weight.grad is not None
    # the head is not on the acting path: decoding needs no privileged input and round-trips
    obs = {"state": batch["observation.state"][:1].numpy(),
           "rgb": batch["observation.images.rgb"][:1].numpy(), "instruction": ["pick up the cube"]}
    policy.eval()
    policy.save_pretrained(tmp_path / "p")
    loaded = TokenVLA.from_pretrained(tmp_path / "p")
    assert np.array_equal(policy.predict_action_chunk(obs), loaded.predict_action_chunk(obs))
