"""hf_vla: a real-architecture Hugging Face VLM (Idefics3/SmolVLM, PaliGemma) as an action model:
bins <-> vocabulary ids, greedy decoding = ``generate``, Jacobi = greedy, LoRA, save/load, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.errors import UserError
from vla_kd.methods.bc import TokenBC
from vla_kd.nn.jacobi import jacobi_decode
from vla_kd.policies import vlm_maker
from vla_kd.policies.hf_checkpoint import load_vlm
from vla_kd.policies.hf_vla import HFVLA, HFVLAConfig
from vla_kd.policies.pretrained import PretrainedPolicy
from vla_kd.policies.vlm_maker import VLMSpec, make_vlm
from vla_kd.trainer import Trainer, TrainerConfig

ARCHITECTURES = ("idefics3", "paligemma")
SIZES = dict(image_size=64, hidden=64, vision_hidden=64, heads=2, kv_heads=1, vision_heads=2)


@pytest.fixture(scope="module")
def vlm_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    return {arch: make_vlm(root / arch, VLMSpec(architecture=arch, **SIZES)) for arch in ARCHITECTURES}


def make_policy(folder, seed: int = 0, sharpen: bool = True, **config) -> HFVLA:
    """A policy around ``folder``'s model with bins fitted to random data. ``sharpen`` scales the
    output layer so that, as in a trained model, each token depends on the ones before it."""
    policy = HFVLA.from_checkpoint(folder, HFVLAConfig(state_dim=5, horizon=2, image_size=64, **config))
    rng = np.random.default_rng(seed)
    policy.set_normalization({"mean": np.zeros(5), "std": np.ones(5)}, rng.uniform(-1, 1, (200, 7)),
                             rng.normal(size=(200, 5)))
    if sharpen:
        with torch.no_grad():
            policy.hf_model.get_output_embeddings().weight.mul_(30.0)
    return policy.eval()


def observations(batch: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, generator=generator)
    state = torch.randn(batch, 5, generator=generator)
    texts = ["push the cube to the goal", "pick up the cube", "push the cube to the goal"][:batch]
    return rgb, state, texts


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bins_map_onto_the_last_vocabulary_ids_and_back(vlm_folders, arch):
    policy = make_policy(vlm_folders[arch])
    tokenizer = policy.processor.tokenizer
    end = policy.config.action_vocab_end
    assert end == tokenizer.vocab_size and end <= len(tokenizer)
    bins = torch.arange(256)
    ids = policy.bin_token_ids(bins)
    assert ids.max() == end - 1 and ids.min() == end - 256 and ids[0] == end - 1  # OpenVLA's order
    assert torch.equal(end - 1 - ids, bins)
    # In the maker's tokenizer the bins are its <action_k> tokens; the image tokens lie elsewhere.
    assert tokenizer.convert_ids_to_tokens([int(ids[0]), int(ids[255])]) == ["<action_255>", "<action_000>"]
    assert policy.processor.image_token_id not in set(ids.tolist())
    # Logits come out in bin order: bin k's logit is vocabulary id end - 1 - k's.
    vocab_logits = torch.randn(2, len(tokenizer) + 10)
    assert torch.equal(policy.bin_logits(vocab_logits)[:, 3], vocab_logits[:, end - 4])
    actions = torch.rand(4, 2, 7) * 1.6 - 0.8
    decoded = policy.tokens_to_actions(policy.action_tokens(actions))
    half_bin = (policy.tokenizer.high - policy.tokenizer.low) / 256 / 2
    assert torch.all((decoded - actions).abs() <= half_bin + 1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_decoding_equals_generate_and_teacher_forcing(vlm_folders, arch):
    policy = make_policy(vlm_folders[arch])
    rgb, state, texts = observations()
    tokens = policy.generate_tokens(rgb, state, texts)
    # (PaliGemma ties its output layer to the embeddings, so a random one repeats its last token
    # within a row; its rows still differ.)
    assert tokens.shape == (3, policy.n_action_tokens) and len(set(tokens.flatten().tolist())) > 1
    # The model's own generate, constrained to the action ids, on the same prompts (the rows of
    # one length: generate's positions then need no padding rule).
    rows = [0, 2]
    inputs = policy.prompt(rgb[rows], state[rows], [texts[i] for i in rows])
    allowed = set(policy.bin_ids.tolist())
    vocab = policy.hf_model.get_output_embeddings().weight.shape[0]
    generated = policy.hf_model.generate(
        **inputs, max_new_tokens=policy.n_action_tokens, do_sample=False,
        suppress_tokens=[i for i in range(vocab) if i not in allowed],
    )
    generated_bins = policy.config.action_vocab_end - 1 - generated[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(generated_bins, tokens[rows])
    # Teacher forcing on the greedy output predicts that output, left-padded row included.
    with torch.no_grad():
        assert torch.equal(policy.token_logits(rgb, state, texts, tokens).argmax(-1), tokens)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_jacobi_decoding_reaches_the_greedy_tokens(vlm_folders, arch):
    policy = make_policy(vlm_folders[arch])
    rgb, state, texts = observations()
    greedy = policy.generate_tokens(rgb, state, texts)
    for init in ("repeat", "random"):
        result = jacobi_decode(policy, rgb, state, texts, init=init, record=True,
                               generator=torch.Generator().manual_seed(1))
        assert torch.equal(result.tokens, greedy), init
        assert set(result.cache_lengths) == {result.prefix_length}, "each pass leaves the prompt alone"
    policy.config.decoding = "jacobi"
    assert torch.equal(policy.decode_tokens(rgb, state, texts), greedy)


def test_state_and_image_reach_the_first_action(vlm_folders):
    policy = make_policy(vlm_folders["idefics3"])
    rgb, state, texts = observations()
    tokens = torch.zeros(3, policy.n_action_tokens, dtype=torch.long)
    with torch.no_grad():
        base = policy.token_logits(rgb, state, texts, tokens)[:, 0]
        moved_state = policy.token_logits(rgb, state + 2.0, texts, tokens)[:, 0]
        moved_image = policy.token_logits(255 - rgb, state, texts, tokens)[:, 0]
    assert (base - moved_state).abs().max() > 1e-3 and (base - moved_image).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_is_exact(vlm_folders, arch, tmp_path):
    policy = make_policy(vlm_folders[arch])
    rgb, state, texts = observations()
    policy.save_pretrained(tmp_path / "policy", extra={"steps": 3})
    loaded = PretrainedPolicy.from_pretrained(tmp_path / "policy")
    assert isinstance(loaded, HFVLA) and loaded.config == policy.config
    for name, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert torch.equal(loaded.generate_tokens(rgb, state, texts), policy.generate_tokens(rgb, state, texts))
    obs = {"rgb": rgb.numpy(), "state": state.numpy(), "instruction": texts}
    assert loaded.act(obs).shape == (3, 7)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_predicted_tactile_token_enters_the_prompt_and_round_trips(vlm_folders, arch, tmp_path):
    plain = make_policy(vlm_folders[arch])
    policy = make_policy(vlm_folders[arch], tactile_token_dim=4)
    rgb, state, texts = observations()
    inputs, summary = policy.encode(rgb, state, texts)
    assert inputs["input_ids"].shape[1] == plain.encode(rgb, state, texts)[0]["input_ids"].shape[1] + 1
    assert summary.shape[0] == 3, "the tactile head reads the image at inference too"
    # the cached decoders and teacher forcing see the same prompt: Jacobi and forcing reach greedy's tokens
    greedy = policy.generate_tokens(rgb, state, texts)
    assert torch.equal(jacobi_decode(policy, rgb, state, texts).tokens, greedy)
    with torch.no_grad():
        assert torch.equal(policy.token_logits(rgb, state, texts, greedy).argmax(-1), greedy)
        # the token's embedding reaches the actions
        tokens = torch.zeros(3, policy.n_action_tokens, dtype=torch.long)
        base = policy.token_logits(rgb, state, texts, tokens)[:, 0]
        policy.tactile_proj.bias.add_(1.0)
        moved = policy.token_logits(rgb, state, texts, tokens)[:, 0]
    assert (base - moved).abs().max() > 1e-4
    policy.save_pretrained(tmp_path / "tactile")
    loaded = HFVLA.from_pretrained(tmp_path / "tactile")
    assert loaded.config.tactile_token_dim == 4
    assert torch.equal(loaded.generate_tokens(rgb, state, texts), policy.generate_tokens(rgb, state, texts))


def fixed_batch(policy: HFVLA, seed: int = 0) -> dict:
    rgb, state, texts = observations(seed=seed)
    actions = torch.rand(3, 2, 7, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8
    return {"observation.images.rgb": rgb, "observation.state": state, "task": texts, "action": actions,
            "action_is_pad": torch.zeros(3, 2, dtype=torch.bool)}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_auxiliary_pose_head_learns_from_the_image_and_saves(vlm_folders, arch, tmp_path):
    policy = make_policy(vlm_folders[arch], sharpen=False, aux_state_dim=4)
    policy.aux_norm.fit({"mean": np.full(4, 0.5), "std": np.full(4, 2.0)})
    batch = fixed_batch(policy)
    batch["observation.environment_state"] = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    method = TokenBC(policy, shift_pad=0, aux_weight=1.0)
    optimizer = torch.optim.AdamW(list(method.parameters()), lr=3e-3)
    policy.train()
    first = None
    for step in range(30):
        loss, logs = method.loss(batch, step)
        first = first if first is not None else logs["losses/aux_privileged"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logs["losses/aux_privileged"] < 0.5 * first, (first, logs)
    # The summary is the image's: another image, another summary; nothing of it at inference.
    summary = policy.encode(*observations())[1]
    other_summary = policy.encode(*observations(seed=1))[1]
    assert summary.shape == (3, policy.hf_model.config.get_text_config().hidden_size)
    assert not torch.allclose(summary, other_summary)
    assert policy.eval().encode(*observations())[1] is None
    policy.save_pretrained(tmp_path / "aux")
    loaded = HFVLA.from_pretrained(tmp_path / "aux")
    assert torch.equal(loaded.aux_head.weight, policy.aux_head.weight)
    assert torch.equal(loaded.aux_norm.std, policy.aux_norm.std)


def test_lora_fine_tune_lowers_the_loss_and_leaves_the_base_weights(vlm_folders, tmp_path):
    policy = make_policy(vlm_folders["idefics3"], sharpen=False, lora_rank=8, lora_alpha=16.0)
    base_before = {k: v.clone() for k, v in policy.hf_model.state_dict().items() if "lora_" not in k}
    method = TokenBC(policy, shift_pad=0)
    trainable = list(method.parameters())
    assert trainable and all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(trainable, lr=3e-3)
    batch = fixed_batch(policy)
    policy.train()
    losses = []
    for step in range(40):
        loss, _ = method.loss(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.85 * losses[0], losses
    after = policy.hf_model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items())
    # Unmerged adapters save and load exactly (a resumable checkpoint); merging keeps the outputs.
    policy.eval()
    rgb, state, texts = observations()
    policy.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "vlm_adapter").is_dir()
    loaded = HFVLA.from_pretrained(tmp_path / "lora")
    for name, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    tokens = policy.generate_tokens(rgb, state, texts)
    with torch.no_grad():
        before = policy.token_logits(rgb, state, texts, tokens)
        policy.merge_lora()
        merged = policy.token_logits(rgb, state, texts, tokens)
    assert policy.config.lora_rank == 0 and not any("lora_" in k for k in policy.state_dict())
    torch.testing.assert_close(merged, before, atol=1e-4, rtol=1e-4)


def test_lora_training_resumes_exactly(vlm_folders, tiny_datasets, tmp_path):
    dataset = LeRobotDataset(tiny_datasets(image_size=64), action_horizon=2)

    def method(seed):
        torch.manual_seed(seed)
        return TokenBC(make_policy(vlm_folders["idefics3"], sharpen=False, lora_rank=4), shift_pad=2)

    config = dict(steps=4, batch_size=4, checkpoint_every=2, warmup_steps=1, progress=False, lr=1e-2)
    straight = method(0)
    Trainer(straight, dataset, TrainerConfig(**config), tmp_path / "a").fit()
    Trainer(method(0), dataset, TrainerConfig(**config), tmp_path / "b").fit(until=2)
    resumed = method(0)
    Trainer(resumed, dataset, TrainerConfig(**config, resume=True), tmp_path / "b").fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_bad_folders_are_one_line(vlm_folders, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_vlm(tmp_path / "missing")
    # A text-only model is not an image-text-to-text model.
    import transformers

    config = transformers.LlamaConfig(vocab_size=600, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    with pytest.raises(UserError, match=r"cannot load .* as an image-text-to-text model"):
        load_vlm(tmp_path / "llama")
    # A folder with its own modelling code loads only when the user trusts it.
    remote = tmp_path / "remote"
    make_vlm(remote, VLMSpec(**SIZES))
    doc = json.loads((remote / "config.json").read_text())
    doc["auto_map"] = {"AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"}
    (remote / "config.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="trust_remote_code=true"):
        load_vlm(remote)
    # A vocabulary without room for 256 action ids.
    monkeypatch.setattr(vlm_maker, "N_ACTION_BINS", 0)
    small = make_vlm(tmp_path / "small", VLMSpec(**SIZES))
    with pytest.raises(UserError, match="too small for 256 action ids"):
        HFVLA.from_checkpoint(small, HFVLAConfig(state_dim=5))
    # A saved policy is not a checkpoint to fine-tune; its weights truncated are corrupt.
    policy = make_policy(vlm_folders["paligemma"])
    policy.save_pretrained(tmp_path / "policy")
    with pytest.raises(UserError, match="saved vla_kd policy"):
        load_vlm(tmp_path / "policy")
    weights = next((tmp_path / "policy" / "vlm").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(UserError, match="corrupt"):
        HFVLA.from_pretrained(tmp_path / "policy")
