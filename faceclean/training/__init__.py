"""Stage 3, training: a backbone and a margin-loss head trained on a clean list.

Modules: ``backbones`` (MobileFaceNet of width W and depth D, IResNet; exact MAC counts),
``losses`` (the margin-loss heads by name: unified, ArcFace, CosFace, AdaFace, NPCFace,
MV-Softmax, Search-Softmax, linear; Partial FC; each also sharded over ranks),
``distributed`` (the collectives of the model-parallel head), ``checkpoint`` (one
``weights_only`` file that resumes a run exactly on any number of processes), ``run`` (a
run folder: its config, model and loading), ``train`` (the training loop; ``faceclean
train``), ``search_softmax`` (the reward-guided search over ``a``: ``--loss
search-softmax --search-copies B``), ``teacher`` (LATSE teacher top-k filtering),
``verification`` (TAR@FAR and ``.bin`` 10-fold accuracy; ``faceclean eval``), ``export``
(ONNX export; ``faceclean export``).

Exports: ``TrainConfig``, ``load_run``, ``create_backbone``, ``count_macs``,
``create_head``, ``HEADS``, ``export_onnx``; the loop is
``from faceclean.training.train import train``.
"""

from faceclean._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "run",
        "load_run": "run",
        "create_backbone": "backbones",
        "count_macs": "backbones",
        "create_head": "losses",
        "HEADS": "losses",
        "export_onnx": "export",
    },
)
__all__ = sorted(__dir__())
