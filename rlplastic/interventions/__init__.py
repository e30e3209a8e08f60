"""Plasticity interventions: resets, regularizers and the triggers that fire them (docs/reference.md §4).

Importing any part of the package registers every intervention here, in this order: the order in which
:class:`~rlplastic.interventions.intervention_set.InterventionSet` builds them (operations first), asks
their triggers and adds their loss terms, so it is part of a run's numbers. A class registered elsewhere
comes after these.
"""

# isort: off
from rlplastic.interventions import resets  # noqa: F401  reset, heads_reset, shrink_perturb
from rlplastic.interventions import redo  # noqa: F401  redo
from rlplastic.interventions import injection  # noqa: F401  inject
from rlplastic.interventions import sam  # noqa: F401  sam
from rlplastic.interventions import anchored  # noqa: F401  l2_init, w2_init
from rlplastic.interventions import nc_reg  # noqa: F401  nc_reg
from rlplastic.interventions import weight_decay  # noqa: F401  weight_decay
# isort: on
