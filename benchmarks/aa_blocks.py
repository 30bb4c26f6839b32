"""An A/A copy of the baseline block, for measuring what paired differences look like when nothing differs.

``aa_copy`` is ``baseline`` in every formula; its only difference is one extra draw from the random stream
while the model is built, so its weights start from another draw of the same distribution: a pair
(baseline, aa_copy) at one seed shares the data order and differs as two initialisations do.  Used by the
A/A study in docs/benchmarks.md ("What paired differences look like").
"""

import torch

from ablate.blocks import BasicBlock, register_block


@register_block("aa_copy")
class AACopy(BasicBlock):
    def init_merge(self, channels):
        torch.rand(1)  # shifts every later initialisation draw: same distribution, another sample
