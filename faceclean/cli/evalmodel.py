"""The options of ``faceclean eval MODEL.onnx``: extract's preprocessing and model options.

The scoring itself is :func:`faceclean.training.evaluate_model.evaluate_onnx`.
"""

from __future__ import annotations

import click

from faceclean.cli.extract import preprocessing_options


def onnx_model_options(f):
    """The preprocessing and model options of `extract`, for commands that run any ONNX
    model the way extract does (``faceclean eval MODEL.onnx``)."""
    f = click.option("--model-output", metavar="NAME", help="The model's embedding output.")(f)
    f = click.option(
        "--model-device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where onnxruntime runs an ONNX model.",
    )(f)
    return preprocessing_options(f)
