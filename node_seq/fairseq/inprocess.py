"""fairseq's command lines run in this process: ``fairseq-preprocess``, ``fairseq-train``, ``fairseq-generate``,
``fairseq-eval-lm``.

The tests and the benchmarks run fairseq through these: no interpreter and import start-up per run,
and one ``torch.set_num_threads`` for all of them. Each takes the command's own arguments. Importing
this module registers node-seq's model and task, so no ``--user-dir`` is needed (a command run in a
shell of its own needs one: fairseq imports nothing else).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from typing import Callable, Iterator

from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf


def parse(argv: list[str], parser: Callable[[], argparse.ArgumentParser] = options.get_training_parser
          ) -> argparse.Namespace:
    """The arguments as fairseq's command line reads them (``--arch``'s options included)."""
    return options.parse_args_and_arch(parser(), argv)


def preprocess(argv: list[str]) -> None:
    from fairseq_cli import preprocess as command

    command.main(options.get_preprocessing_parser().parse_args(argv))


def train(argv: list[str]) -> None:
    """fairseq-train; its metrics go where its options say (``--log-file``, ``--log-format json``)."""
    from fairseq_cli import train as command

    args = parse(argv, options.get_training_parser)
    with _fairseq_logging():
        command.main(convert_namespace_to_omegaconf(args))


def generate(argv: list[str]) -> str:
    """fairseq-generate; what it printed and logged, as one text (hypotheses, summary, ``NODE NFE``)."""
    from fairseq_cli import generate as command

    return _captured(command.main, parse(argv, options.get_generation_parser), "fairseq_cli.generate")


def eval_lm(argv: list[str]) -> str:
    """fairseq-eval-lm; what it logged, as one text (``Loss (base 2): ..., Perplexity: ...``)."""
    from fairseq_cli import eval_lm as command

    args = parse(argv, options.get_eval_lm_parser)
    return _captured(lambda a: command.main(convert_namespace_to_omegaconf(a)), args, "fairseq_cli.eval_lm")


def _captured(main: Callable[[argparse.Namespace], object], args: argparse.Namespace, logger_name: str) -> str:
    """Run a fairseq command's ``main``; what it printed and what ``logger_name`` logged."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with _fairseq_logging(), contextlib.redirect_stdout(stream):
            main(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return stream.getvalue()


def json_records(text: str) -> list[dict]:
    """The JSON objects of a ``--log-format json`` log, one per line that holds one."""
    records = []
    for line in text.splitlines():
        start = line.find('{"')
        if start >= 0:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line[start:]))
    return records


@contextlib.contextmanager
def _fairseq_logging() -> Iterator[None]:
    """fairseq logs its metrics at INFO: the root logger is at INFO for the run while the console keeps
    to warnings; afterwards both are as they were, and the ``--log-file`` handler is closed."""
    root = logging.getLogger()
    level = root.level
    quieted = [(h, h.level) for h in root.handlers
               if not isinstance(h, logging.FileHandler) and h.level < logging.WARNING]
    root.setLevel(logging.INFO)
    for handler, _ in quieted:
        handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler, handler_level in quieted:
            handler.setLevel(handler_level)
        # fairseq-train's --log-file handlers sit on fairseq_cli.train's logger and on the progress bar's
        # (one per epoch): a later run in this process would write into every earlier run's file
        fairseq_loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                           if name.split(".")[0] in ("fairseq", "fairseq_cli")]
        for logger in (root, *fairseq_loggers):
            for handler in list(logger.handlers):
                if isinstance(handler, logging.FileHandler):
                    logger.removeHandler(handler)
                    handler.close()
