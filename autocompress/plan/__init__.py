"""The compression plan: what to do to each encoder layer, as plain data saved as YAML or JSON
(:class:`CompressionPlan`, made of :class:`LayerPlan` per layer, a :class:`DistillConfig` and the
whole-model techniques' sections); :meth:`CompressionPlan.resolve` turns it into one
:class:`ResolvedLayer` per layer of a model."""

from autocompress.arch.base import LINEAR_GROUPS
from autocompress.plan.compression import CompressionPlan, ResolvedLayer
from autocompress.plan.parts import DTYPES, SCHEMA, Dtype, Group, LayerPlan
from autocompress.techniques.distill import DISTILL_WEIGHTS, HIDDEN_PROJECTIONS, KD_LR, DistillConfig

__all__ = ["DISTILL_WEIGHTS", "DTYPES", "HIDDEN_PROJECTIONS", "KD_LR", "LINEAR_GROUPS", "SCHEMA", "CompressionPlan",
           "DistillConfig", "Dtype", "Group", "LayerPlan", "ResolvedLayer"]
