"""One set of CLI options: every command spells, defaults and explains a shared option the same
way (psearch.core.options), and the README's option claims match the commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from psearch.cli.main import cli
from psearch.core import options
from psearch.data import FORMATS

README = Path(__file__).resolve().parents[1] / "README.md"

SHARED = {  # long option -> the factory every command must build it with
    "--device": options.device_option(),
    "--quiet": options.quiet_option(),
    "--json": options.json_option(),
    "--format": options.format_option(),
    "--download": options.download_option(),
    "--set": options.set_option(),
    "--resume": options.resume_option(),
    "--score-thresh": options.score_thresh_option(0.5),
    "--gallery-sizes": options.gallery_sizes_option(),
    "--checkpoint": options.checkpoint_option(),
}
OWN_FORMAT = {"synth"}
"""Commands whose --format is the layout they write, not a dataset they read."""
OWN_HELP = {"--gallery-sizes"}
"""Options whose help says what the sizes do in each command (report, keep, generate)."""
MODEL_COMMANDS = {"train-detector", "detect", "train-reid", "embed", "train-joint", "query",
                  "evaluate-gallery", "demo", "serve"}
"""Commands that load or train a model; each needs --device and (but serve, which shows no
progress bar) --quiet."""


def walk(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    """Every command and subcommand of the group: "data info" -> its click command."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found.update(walk(command, f"{prefix}{name} "))
    return found


COMMANDS = walk()


def option(command: click.Command, name: str) -> click.Option | None:
    """The option of ``command`` spelled ``name`` (visibly: hidden aliases do not count)."""
    for param in command.params:
        if isinstance(param, click.Option) and name in param.opts:
            hidden = getattr(param, "hidden_aliases", ())
            return None if name in hidden else param
    return None


def reference(name: str) -> click.Option:
    def dummy() -> None: ...

    return SHARED[name](dummy).__click_params__[0]


def commands_with(name: str) -> set[str]:
    return {path for path, command in COMMANDS.items() if option(command, name) is not None}


def test_the_walk_sees_every_command_and_subcommand():
    assert {"data info", "data convert", "weights list", "weights fetch", "index", "evaluate",
            "synth", *MODEL_COMMANDS} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_a_shared_option_is_the_same_wherever_it_is_used(name):
    ref = reference(name)
    users = commands_with(name) - (OWN_FORMAT if name == "--format" else set())
    assert users, f"{name} is used by no command"
    for path in sorted(users):
        got = option(COMMANDS[path], name)
        where = f"psearch {path} {name}"
        assert (got.opts, got.secondary_opts, got.name) == (ref.opts, ref.secondary_opts,
                                                            ref.name), where
        assert got.help == ref.help or name in OWN_HELP, where
        assert got.is_flag == ref.is_flag and got.multiple == ref.multiple, where
        assert getattr(got.type, "choices", None) == getattr(ref.type, "choices", None), where
        if name != "--score-thresh":  # its default is each stage's own threshold
            assert got.default == ref.default, where


def test_model_commands_take_device_and_quiet():
    assert commands_with("--device") == MODEL_COMMANDS
    assert MODEL_COMMANDS - {"serve"} <= commands_with("--quiet")
    for path in MODEL_COMMANDS - {"serve"}:
        assert option(COMMANDS[path], "-q") is option(COMMANDS[path], "--quiet"), path
    # the commands that train or load checkpoints are all in MODEL_COMMANDS, but for the ONNX
    # export, which traces and checks the network on the CPU (ONNX is a CPU-side format)
    assert {p for p in COMMANDS if p.startswith("train-")} | commands_with("--weights") \
        <= MODEL_COMMANDS | {"export onnx"}


def test_every_train_command_can_download_published_weights():
    trainers = {p for p in COMMANDS if p.startswith("train-")}
    assert trainers == {"train-detector", "train-reid", "train-joint"}
    # detect runs published weights as they are (--weights coco*)
    assert commands_with("--download") == trainers | {"detect"}


def test_one_spelling_per_idea():
    for path, command in COMMANDS.items():
        for old in ("--det-thresh", "--gallery-size"):
            assert option(command, old) is None, f"psearch {path} shows {old}"
        json_opt = option(command, "--json")
        assert json_opt is None or json_opt.is_flag, f"psearch {path}: --json takes a value"
    assert options.DATASET_FORMATS == FORMATS
    assert reference("--format").type.choices == ("auto", *FORMATS)


def test_old_spellings_still_parse():
    evaluate = COMMANDS["evaluate"]
    ctx = evaluate.make_context("evaluate", [
        "--data", "d", "--results", "r.npz", "--det-thresh", "0.3", "--json", "e.json",
        "--gallery-size", "50", "--gallery-size", "100"])
    assert ctx.params["score_thresh"] == 0.3 and ctx.params["json_path"] == Path("e.json")
    assert ctx.params["gallery_sizes"] == (50, 100)
    ctx = evaluate.make_context("evaluate", ["--data", "d", "--results", "r.npz",
                                             "--gallery-sizes", "50,100"])
    assert ctx.params["gallery_sizes"] == (50, 100) and ctx.params["json_path"] is None
    with pytest.raises(click.BadParameter, match="positive numbers"):
        evaluate.make_context("evaluate", ["--data", "d", "--results", "r.npz",
                                           "--gallery-sizes", "50,x"])
    help_text = evaluate.get_help(click.Context(evaluate, info_name="evaluate"))
    assert "--det-thresh" not in help_text and "--json" not in help_text
    assert "--score-thresh" in help_text and "--gallery-sizes" in help_text


# --- the README's claims ----------------------------------------------------------------------


def readme_bullet(start: str) -> str:
    """The README bullet (of "Options every command spells the same way") starting so."""
    text = README.read_text()
    match = re.search(r"^- " + re.escape(start) + r"(.*?)(?=^- |^$)", text, re.S | re.M)
    assert match, f"README: no bullet starting {start!r}"
    return " ".join((start + match.group(1)).split())


def named_commands(text: str) -> set[str]:
    """The `command` names in the first parenthesis of ``text``."""
    inside = re.search(r"\((.*?)\)", text).group(1)
    return {name for name in re.findall(r"`([a-z -]+)`", inside) if name in COMMANDS}


def test_readme_device_claim():
    claim = readme_bullet("Every command that runs a model")
    assert named_commands(claim) == commands_with("--device") == MODEL_COMMANDS
    assert "`--device auto|cpu|cuda|cuda:N`" in claim and "(default `auto`" in claim
    assert reference("--device").default == "auto"


def test_readme_quiet_claim():
    claim = readme_bullet("Every command that shows progress bars")
    assert "`-q/--quiet`" in claim and "the commands above" in claim
    assert "above but `serve`" in claim  # it shows no progress bar
    assert commands_with("--quiet") == (MODEL_COMMANDS - {"serve"}) | (named_commands(claim)
                                                                      - {"serve"})
    assert option(COMMANDS["index"], "--quiet") is None  # the README says so


def test_readme_json_download_and_format_claims():
    claim = readme_bullet("`--json` prints")
    json_part, out_part = claim.split(";")
    assert named_commands(json_part) == commands_with("--json")
    for path in named_commands(out_part):
        out = option(COMMANDS[path], "--out")
        assert out is not None and "--json" in out.opts and not out.required, path
    claim = readme_bullet("`--download`")
    assert named_commands(claim) == commands_with("--download")
    claim = readme_bullet("`--format`")
    assert "`auto|" + "|".join(FORMATS) + "`" in claim


def readme_commands() -> list[str]:
    """Every ``psearch ...`` line of the README's code blocks (continuations joined)."""
    lines = []
    for block in re.findall(r"```\w*\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip()
            if line.startswith("psearch "):
                lines.append(line)
    return lines


def test_readme_command_lines_parse():
    lines = readme_commands()
    assert len(lines) >= 30
    for line in lines:
        args = shlex.split(line)[1:]
        command: click.Command = cli
        while isinstance(command, click.Group) and args and args[0] in command.commands:
            command = command.commands[args.pop(0)]
        assert not isinstance(command, click.Group) or "--help" in args, line
        try:
            command.make_context(command.name, args)
        except click.exceptions.Exit:
            continue
        except click.ClickException as exc:
            pytest.fail(f"README: {line!r}: {exc.format_message()}")


@pytest.mark.parametrize("flag", [[], ["--download"]])
def test_train_joint_download_opens_the_download_policy(flag, cuhk_world, tmp_path, monkeypatch):
    import psearch.joint.train as joint_train
    from psearch.cli.main import main
    from psearch.core.weights import downloads_allowed
    from psearch.training.trainer import TrainResult

    seen = {}

    def fake_train(dataset, config, out_dir, **kwargs):
        seen.update(kwargs, allowed=downloads_allowed())
        return TrainResult("train-joint", Path(out_dir), [], {"train_seconds": 0.0})

    monkeypatch.setattr(joint_train, "train_joint", fake_train)
    main(["train-joint", "--data", str(cuhk_world), "--out", str(tmp_path / "run"), "-q", *flag])
    assert seen["allowed"] is bool(flag) and seen["progress"] is False
    assert seen["device"] == "auto"
