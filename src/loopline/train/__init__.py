"""Training: target and task, feature roles, the feature pipeline, 2-D projections.

>>> import pandas as pd
>>> infer_task(pd.Series(["No", "Yes", "No"]))
'binary'
"""

from loopline.train.data import TrainingData, load_training_frame
from loopline.train.explain import tree_contributions
from loopline.train.features import DatetimeParts, build_pipeline, build_preprocessor
from loopline.train.job import TrainingJob, TrainResult
from loopline.train.projection import project_2d, projection_rows
from loopline.train.roles import RoleAssignment, infer_roles
from loopline.train.task import check_target, encode_target, infer_task

__all__ = [
    "DatetimeParts",
    "RoleAssignment",
    "TrainResult",
    "TrainingData",
    "TrainingJob",
    "build_pipeline",
    "build_preprocessor",
    "check_target",
    "encode_target",
    "infer_roles",
    "infer_task",
    "load_training_frame",
    "project_2d",
    "projection_rows",
    "tree_contributions",
]
