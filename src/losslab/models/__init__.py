"""Models. Input and output sizes come from the data, never typed by the user.

The builders are exported here because configs name them as `losslab.models.<builder>`
(`_target_` in conf/model/*.yaml and in users' own model configs).
"""

from losslab.models.cnn1d import cnn1d
from losslab.models.dense import linear, mlp

__all__ = ["cnn1d", "linear", "mlp"]
