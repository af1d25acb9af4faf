"""The compression plan: what to do to each encoder layer, as plain data saved as YAML or JSON
(:class:`CompressionPlan`, made of :class:`LayerPlan` per layer and a :class:`DistillConfig`);
:meth:`CompressionPlan.resolve` turns it into one :class:`ResolvedLayer` per layer of a model."""

from autocompress.plan.compression import CompressionPlan, ResolvedLayer
from autocompress.plan.parts import (DISTILL_WEIGHTS, DTYPES, HIDDEN_PROJECTIONS, LINEAR_GROUPS, SCHEMA, DistillConfig,
                                     Dtype, EmbeddingPlan, Group, LayerPlan)

__all__ = ["DISTILL_WEIGHTS", "DTYPES", "HIDDEN_PROJECTIONS", "LINEAR_GROUPS", "SCHEMA", "CompressionPlan",
           "DistillConfig", "Dtype", "EmbeddingPlan", "Group", "LayerPlan", "ResolvedLayer"]
