"""Train a recall task with sample-factory's APPO and a recall-rl memory core.

    python -m agents.sf_train env=DelayedMatch core=gru env.delay=2 core.hidden_size=128 \\
        --train_for_env_steps=200000 --experiment=dm_gru

``key=value`` words choose the task and core:

* ``env=<task>``: a task by its config name (``delayed_match``, ``minigrid_memory``)
  or id (``recall/DelayedMatch-v0``, ``DelayedMatch-v0``, ``DelayedMatch``,
  ``MiniGrid-MemoryS11-v0``); ``env.<knob>=<value>`` sets a task knob
  (``env.room=S11`` moves a MiniGrid run to that room's id);
* ``core=<name>``: a ``memory_modules`` core; ``core.<option>=<value>`` sets
  one of its options; ``core=sf_gru`` / ``core=sf_lstm``: sample-factory's own
  GRU / LSTM core (torch's ``nn.GRU`` / ``nn.LSTM``; options ``hidden_size``,
  ``num_layers``);
* ``threads=<n>``: torch CPU threads (default 1: on a small shared CPU more
  threads make sample-factory's many small forward passes slower, not faster).

Values are read as JSON where they parse (``2``, ``0.5``, ``true``), else as
text. Every ``--flag=value`` (write it with ``=``) is sample-factory's own and overrides the defaults below
(CPU-friendly: serial mode, synchronous APPO, one worker; with
``--batched_sampling=True`` one batched env of ``--recall_copies`` copies per
worker, and ``--num_envs_per_worker`` other than 1 is refused; MiniGrid rooms
run batched only, so for them it defaults to True). ``--rnn_size``,
``--rnn_type``, ``--rnn_num_layers`` and ``--actor_critic_share_weights`` are
set from the core (see ``agents.integrations.sample_factory``) and may not be passed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from agents.common.cli import one_line_errors
from agents.integrations.sample_factory import (
    SF_ENV_IDS,
    SF_OWN_CORES,
    add_recall_args,
    check_batched_envs_per_worker,
    core_state_size,
    register_all,
    resolve_env_id,
    sf_own_core_flags,
)

FORCED = ("rnn_size", "rnn_type", "rnn_num_layers", "actor_critic_share_weights", "use_rnn")

DEFAULTS = {
    "algo": "APPO",
    "serial_mode": True,
    "async_rl": False,
    "num_workers": 1,
    "num_envs_per_worker": 16,
    "worker_num_splits": 1,
    "rollout": 32,
    "num_batches_per_epoch": 4,
    "num_epochs": 4,
    "learning_rate": 1e-3,
    "gamma": 0.99,
    "exploration_loss_coeff": 0.01,
    "encoder_mlp_layers": [128],
    "train_dir": "runs/sf",
    "save_every_sec": 60,
    "keep_checkpoints": 2,
    "with_wandb": False,
    "decorrelate_envs_on_one_worker": False,
}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_words(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``key=value`` words -> settings; the rest (sample-factory ``--flags``) pass through."""
    words: dict = {"env": None, "core": "gru", "env_kwargs": {}, "core_kwargs": {}, "threads": 1}
    rest = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            rest.append(arg)
            continue
        key, val = arg.split("=", 1)
        if key == "env":
            words["env"] = resolve_env_id(val)
        elif key == "core":
            words["core"] = val
        elif key == "threads":
            if not val.isdigit() or int(val) < 1:
                raise ValueError(f"threads={val!r}; accepted: an integer >= 1")
            words["threads"] = int(val)
        elif key.startswith("env."):
            words["env_kwargs"][key[4:]] = _value(val)
        elif key.startswith("core."):
            words["core_kwargs"][key[5:]] = _value(val)
        else:
            raise ValueError(
                f"unknown setting {arg!r}; accepted: env=<task>, core=<name>, env.<knob>=<v>, "
                "core.<option>=<v>, threads=<n>, or sample-factory --flags"
            )
    room = words["env_kwargs"].pop("room", None)
    if room is not None:  # MiniGrid's room is its id
        from envs.registration import MINIGRID_IDS, MINIGRID_ROOMS, minigrid_id

        if words["env"] not in MINIGRID_IDS:
            raise ValueError(f"env.room={room!r}: only MiniGrid's Memory rooms have a room; "
                             f"env is {words['env']}")
        if room not in MINIGRID_ROOMS:
            raise ValueError(f"env.room={room!r} is not a MiniGrid Memory room; "
                             f"accepted: {', '.join(MINIGRID_ROOMS)}")
        words["env"] = minigrid_id(room)
    return words, rest


def _flag(rest: list[str], name: str) -> str | None:
    """The value of ``--name=value`` among sample-factory's flags, or None; a flag given
    twice has its last value, as sample-factory's argparse reads it."""
    for f in reversed(rest):
        if f.lstrip("-").startswith(name + "="):
            return f.split("=", 1)[1]
    return None


def _is_true(value) -> bool:
    return str(value).lower() in ("true", "1", "yes")


def build_argv(argv: list[str]) -> list[str]:
    """The full sample-factory argv for a recall run."""
    import envs
    from memory_modules import CORES

    words, rest = split_words(argv)
    for flag in rest:
        name = flag.lstrip("-").split("=", 1)[0]
        if name in FORCED:
            raise ValueError(
                f"--{name} is set from the core; choose the core's size with core.hidden_size=... "
                f"(forced flags: {', '.join(FORCED)})"
            )
        if name in ("env", "recall_core", "recall_core_kwargs", "env_kwargs"):
            raise ValueError(f"--{name}: use env=/core=/env.<knob>=/core.<option>= instead")
    if words["env"] is None:
        raise ValueError("missing env=<task>; accepted: " + ", ".join(SF_ENV_IDS))
    if words["core"] not in CORES and words["core"] not in SF_OWN_CORES:
        raise ValueError(f"unknown core {words['core']!r}; accepted: "
                         f"{', '.join([*CORES, *SF_OWN_CORES])}")
    # Validate knobs and options now, with the tasks' and cores' own error messages.
    envs.make_vec(words["env"], 1, **words["env_kwargs"])
    if words["core"] in SF_OWN_CORES:  # sample-factory's own nn.GRU / nn.LSTM
        rnn = sf_own_core_flags(words["core"], words["core_kwargs"])
    else:  # a recall-rl core inside sample-factory's state vector
        rnn = [f"--rnn_size={core_state_size(words['core'], words['core_kwargs'])}",
               "--rnn_type=gru", "--rnn_num_layers=1"]

    given = {flag.lstrip("-").split("=", 1)[0] for flag in rest}
    out = [
        f"--env={words['env']}",
        f"--recall_core={words['core']}",
        f"--recall_core_kwargs={json.dumps(words['core_kwargs'])}",
        f"--env_kwargs={json.dumps(words['env_kwargs'])}",
        "--use_rnn=True",
        *rnn,
        "--actor_critic_share_weights=True",
    ]
    defaults = dict(DEFAULTS)
    defaults["device"] = "gpu" if torch.cuda.is_available() else "cpu"
    batched_flag = _flag(rest, "batched_sampling")
    if words["env"] in envs.MINIGRID_IDS:
        # MiniGrid's copies step together (envs.minigrid_memory): batched only.
        if batched_flag is not None and not _is_true(batched_flag):
            raise ValueError(f"{words['env']} runs batched only; accepted: --batched_sampling=True")
        defaults["batched_sampling"] = True
    if _is_true(batched_flag or defaults.get("batched_sampling")):
        # One batched env of --recall_copies copies per worker (see sf_integration).
        defaults["num_envs_per_worker"] = 1
        if "num_envs_per_worker" in given:
            check_batched_envs_per_worker(int(_flag(rest, "num_envs_per_worker")))
    short = words["env"].split("/", 1)[-1].rsplit("-v", 1)[0]
    defaults["experiment"] = f"{short}_{words['core']}"
    if "batch_size" not in given:
        # Synchronous APPO needs one iteration's samples to be a whole number of batches:
        # split what one rollout of all envs collects into num_batches_per_epoch batches.
        def flag(name):
            value = _flag(rest, name)
            return defaults.get(name) if value is None else value

        batched = _is_true(flag("batched_sampling"))
        agents = int(flag("recall_copies") or 64) if batched else 1
        samples = int(flag("num_workers")) * int(flag("num_envs_per_worker")) * agents * int(flag("rollout"))
        defaults["batch_size"] = max(1, samples // int(flag("num_batches_per_epoch")))
    for key, val in defaults.items():
        if key not in given:
            if isinstance(val, list):  # nargs="*" options
                out += [f"--{key}", *map(str, val)]
            else:
                out.append(f"--{key}={val}")
    return out + rest


def parse_cfg(argv: list[str], evaluation: bool = False):
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args

    sf_argv = build_argv(argv)
    parser, _ = parse_sf_args(sf_argv, evaluation=evaluation)
    add_recall_args(parser)
    return parse_full_cfg(parser, sf_argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    from sample_factory.train import run_rl

    argv = sys.argv[1:] if argv is None else argv
    register_all()
    torch.set_num_threads(split_words(argv)[0]["threads"])
    cfg = parse_cfg(argv)
    status = run_rl(cfg)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
