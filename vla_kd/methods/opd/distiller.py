"""``method=opd``: DAgger rounds with a saved or scripted teacher and a student that reads
camera + proprio + instruction only; the best round on validation seeds is the result."""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial

from vla_kd.envs import make_env
from vla_kd.envs.from_config import env_kwargs
from vla_kd.errors import UserError
from vla_kd.evaluator import EvalConfig, check_apart_from_held_out, evaluate_policy
from vla_kd.methods.align import ActionFineTuning, AlignConfig
from vla_kd.methods.bc import bc_objective
from vla_kd.methods.distiller import Distiller, RunContext, TrainResult
from vla_kd.methods.opd.aggregate import Aggregate
from vla_kd.methods.opd.checkpoint import RoundCheckpoint
from vla_kd.methods.opd.config import OPDConfig
from vla_kd.methods.opd.progress import Progress, save_rounds
from vla_kd.methods.opd.rollouts import check_pair, label_gap, label_round, labels_offline, roll_out_round
from vla_kd.methods.opd.token_objective import TokenOnPolicyDistillation
from vla_kd.methods.opd.training_data import training_mix
from vla_kd.methods.registry import register
from vla_kd.policies.factory import build_model
from vla_kd.policies.loading import load_policy
from vla_kd.policies.model_configs import MODEL_SCHEMAS
from vla_kd.policies.registry import TOKEN_POLICY_TYPES
from vla_kd.trainer import Trainer, seed_initial_weights

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AlignedStudentSettings:
    """An aligned VLA (``method=align``) refined by OPD learns as in its own stage 2: actions
    through the reused diffusion decoder, on the parts stage 2 trains (the VLM stays frozen)."""

    type: str = "aligned_vla"
    shift_pad: int = 4
    aux_privileged_weight: float = 0.0  # it has no pose head
    parts: tuple[str, ...] = tuple(AlignConfig().stage2_parts)


def training_settings(ctx: RunContext, student_type: str):
    """The loss settings of the student's model node: ``model=`` when it names the student's type,
    that type's defaults otherwise (a saved student of another type)."""
    if student_type == "aligned_vla":
        return AlignedStudentSettings()
    if ctx.model is not None and ctx.model.type == student_type:
        return ctx.model
    if student_type not in MODEL_SCHEMAS:
        raise UserError(
            f"method=opd trains students of type {sorted(MODEL_SCHEMAS)}; "
            f"'{ctx.student}' holds a {student_type}"
        )
    return MODEL_SCHEMAS[student_type]()


def uses_token_objective(student, teacher, o: OPDConfig) -> bool:
    """True where the student learns VLA-OPD's divergences rather than the teacher's chunks."""
    if getattr(student, "policy_type", None) not in TOKEN_POLICY_TYPES or o.token_objective == "labels":
        return False
    if getattr(teacher, "policy_type", None) not in TOKEN_POLICY_TYPES:
        raise UserError(
            f"method.token_objective={o.token_objective} compares bin distributions: it needs "
            "a token teacher (token_vla, hf_vla); use method.token_objective=labels"
        )
    return True


def new_student(model, data, teacher, o: OPDConfig):
    """A fresh ``model`` student normalised on ``data``; a token student learning the token
    objectives takes its teacher's bins, so that each bin means the same action to both."""
    student = build_model(model, data)
    if uses_token_objective(student, teacher, o):
        student.tokenizer.load_state_dict(teacher.tokenizer.state_dict())
    return student


def objective(student, teacher, model, o: OPDConfig):
    """The loss the student trains with on the aggregate."""
    if uses_token_objective(student, teacher, o):
        return TokenOnPolicyDistillation(
            student, teacher, o.token_objective, o.sample_temperature, shift_pad=model.shift_pad
        )
    if isinstance(model, AlignedStudentSettings):
        return ActionFineTuning(student, parts=model.parts, shift_pad=model.shift_pad)
    return bc_objective(student, model)


def learn_demos(ctx: RunContext, student, teacher, model, demos) -> int:
    """A fresh student's first lessons on the demonstrations before round 0 (``demo_steps``),
    with its objective: behaviour cloning for a continuous student, the token objective on the
    demonstrations' states for a token student; the trainer steps it took."""
    o: OPDConfig = ctx.config
    if o.demo_steps == 0:
        return 0
    _, steps = fit_student(
        ctx, student, teacher, model, demos, o.demo_steps, ctx.trainer.seed, "demos_warmup"
    )
    return steps


def fit_student(ctx: RunContext, student, teacher, model, data, steps: int, seed: int, folder: str):
    """``steps`` of the shared trainer on ``data`` with the student's objective, in
    ``<run_dir>/<folder>``: (its last logged metrics, the steps it took)."""
    settings = dataclasses.replace(ctx.trainer, steps=steps, seed=seed, resume=False)
    loss = objective(student.train(), teacher, model, ctx.config)
    trainer = Trainer(loss, data, settings, ctx.run_dir / folder, ctx.tracker)
    return trainer.fit(), trainer.step


@dataclasses.dataclass
class RoundSetup:
    """What every round of one run shares."""

    ctx: RunContext
    teacher: object
    model: object
    demos: object
    horizon: int
    rollout_env: partial
    validation: EvalConfig
    aggregate: Aggregate
    progress: Progress
    checkpoint: RoundCheckpoint


def run_round(r: int, setup: RoundSetup, student):
    """Roll out (β-mixture), label, aggregate, train, validate: (the student, the round's row)."""
    ctx, o, teacher, progress = setup.ctx, setup.ctx.config, setup.teacher, setup.progress
    beta = o.beta(r) if student is not None else 1.0  # nothing to act yet: the teacher's round
    seeds = list(range(o.seed + r * o.episodes_per_round, o.seed + (r + 1) * o.episodes_per_round))
    episodes = roll_out_round(
        setup.rollout_env, student, teacher, seeds, beta, setup.horizon, o.max_episode_steps, o.workers
    )
    if labels_offline(teacher):
        progress.teacher_queries += label_round(teacher, episodes, setup.horizon, o.label_batch)
        progress.teacher_queries += sum(e.teacher_decisions for e in episodes)
    else:  # online: the teacher answered at every decision
        progress.teacher_queries += sum(len(e) for e in episodes)
    gap = label_gap(episodes)  # every decision labelled now
    progress.env_steps += sum(e.env_steps for e in episodes)
    setup.aggregate.add(episodes, r)
    setup.aggregate.write(setup.horizon)
    data = setup.aggregate.dataset(setup.horizon)
    if student is None:
        student = new_student(setup.model, data, teacher, o)
        check_pair(student, teacher, setup.horizon)
    training = training_mix(setup.demos, data, o.aggregate_share)
    losses, steps = fit_student(
        ctx, student, teacher, setup.model, training, o.steps_per_round, ctx.trainer.seed + r, f"round_{r}"
    )
    progress.trainer_steps += steps
    val = evaluate_policy(ctx.settings, setup.validation, student.eval(), str(ctx.env))
    row = {
        "round": r,
        "beta": beta,
        "rollout_success": sum(e.success for e in episodes) / len(episodes),
        "label_gap": gap,
        "decisions": sum(len(e) for e in episodes),
        "aggregate_states": setup.aggregate.states,
        "training_frames": len(training),
        "teacher_queries_total": progress.teacher_queries,
        "env_steps_total": progress.env_steps,
        "val_success": val["success_rate"],
        "val_ci95": val["ci95"],
        **losses,
    }
    progress.rows.append(row)
    progress.keep_if_best(row, student)
    setup.checkpoint.save(r, episodes, progress, student)
    return student, row


def resume_rounds(setup: RoundSetup, student):
    """A resumed run's finished rounds, progress and student back in place: (first round to
    run, the student)."""
    finished, rounds, setup.progress, weights = setup.checkpoint.load()
    for r, episodes in enumerate(rounds):
        setup.aggregate.add(episodes, r)
    setup.aggregate.write(setup.horizon)
    if student is None:  # a student first built on round 0's labels
        student = new_student(
            setup.model, setup.aggregate.dataset(setup.horizon), setup.teacher, setup.ctx.config
        )
    student.load_state_dict(weights)
    log.info("opd: resumed after round %d (%d aggregated states)", finished - 1, setup.aggregate.states)
    return finished, student


def rollout_env_factory(ctx: RunContext, student, teacher, model) -> partial:
    """Builds the task's rgb env at the pair's image size, with privileged state for a teacher
    that labels online or as the training target of the student's auxiliary pose head (the
    student never reads it)."""
    o: OPDConfig = ctx.config
    image_size = next(
        (
            p.config.image_size
            for p in (student, teacher)
            if hasattr(getattr(p, "config", None), "image_size")
        ),
        None,
    )
    kwargs = env_kwargs(
        ctx.settings,
        str(ctx.env),
        "rgb",
        o.max_episode_steps,
        needs_privileged=not labels_offline(teacher) or getattr(model, "aux_privileged_weight", 0) > 0,
        image_size=image_size,
    )
    return partial(make_env, str(ctx.env), **kwargs)


@register
class OnPolicyDistillation(Distiller):
    """Roll out, label, aggregate, train; validate each round, keep the best."""

    name = "opd"
    config_class = OPDConfig
    inputs = ("teacher", "env", "model", "dataset", "student")

    def fit(self, ctx: RunContext) -> TrainResult:
        o: OPDConfig = ctx.config
        if not ctx.env:
            raise UserError("method=opd needs env=<task>, e.g. env=maniskill/PushCube-v1")
        # held out: ctx.eval's seeds on eval.env, or on env when eval.env is unset (the runner's rule)
        check_apart_from_held_out(
            o.validation_seed,
            o.validation_episodes,
            ctx.eval,
            "method=opd validation",
            "method.validation_seed",
        )
        task = str(ctx.env)
        teacher = "scripted" if ctx.teacher == "scripted" else ctx.load_teacher()
        student = load_policy(ctx.student, role="student", user="method=opd") if ctx.student else None
        if student is not None and student.uses_privileged:
            raise UserError(
                f"method=opd: student '{ctx.student}' reads privileged state; OPD students "
                "read camera + proprio only"
            )
        model = training_settings(ctx, student.policy_type) if student else ctx.model
        horizon = int(student.config.horizon if student else model.horizon)
        demos = ctx.load_dataset(horizon) if ctx.dataset and o.start_from_demos else None
        checkpoint = RoundCheckpoint(ctx.run_dir / "opd_checkpoint")
        resuming = ctx.trainer.resume and checkpoint.exists()
        seed_initial_weights(ctx.trainer.seed)
        progress = Progress()
        if student is None and demos is not None:
            student = new_student(model, demos, teacher, o)
            if not resuming:  # the checkpoint's weights replace these
                progress.trainer_steps += learn_demos(ctx, student, teacher, model, demos)
        if student is not None:
            check_pair(student, teacher, horizon)
        validation = EvalConfig(
            env=task,
            episodes=o.validation_episodes,
            seed=o.validation_seed,
            max_episode_steps=o.max_episode_steps,
            obs_mode="rgb",
            workers=o.workers,
        )
        setup = RoundSetup(
            ctx,
            teacher,
            model,
            demos,
            horizon,
            rollout_env_factory(ctx, student, teacher, model),
            validation,
            Aggregate(ctx.run_dir / "aggregate"),
            progress,
            checkpoint,
        )
        first_round = 0
        if resuming:
            first_round, student = resume_rounds(setup, student)
        started = time.perf_counter()
        for r in range(first_round, o.rounds):
            student, row = run_round(r, setup, student)
            ctx.tracker.log({f"opd/{k}": v for k, v in row.items() if isinstance(v, int | float)}, step=r)
            log.info(
                "opd round %d: beta %.2f, rollouts %.0f%%, validation %.0f%%, aggregate %d states",
                r,
                row["beta"],
                100 * row["rollout_success"],
                100 * row["val_success"],
                setup.aggregate.states,
            )
        progress = setup.progress
        plot = save_rounds(progress.rows, ctx.run_dir)
        student.load_state_dict(progress.best_weights)
        best = progress.best_row
        samples = progress.trainer_steps * ctx.trainer.batch_size
        summary = {
            "student": student.policy_type,
            "rounds": o.rounds,
            "best_round": best["round"],
            "val/success_rate": best["val_success"],
            "teacher_queries": progress.teacher_queries,
            "env_steps": progress.env_steps,
            "steps": progress.trainer_steps,
            "samples": samples,
            "aggregate_states": setup.aggregate.states,
            "rounds_plot": str(plot),
            "wall_seconds_rounds": time.perf_counter() - started,
        }
        return TrainResult(
            student, summary, samples, {"teacher": str(ctx.teacher), "best_round": best["round"]}
        )
