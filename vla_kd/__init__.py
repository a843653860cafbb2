"""vla_kd: distil vision-language-action policies into small, fast students."""

import os

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp, which is not safe in a process that
# already runs threads (simulator renderers, tqdm, the tracker): the forked child can deadlock
# before exec and the parent then waits forever (seen once in the pipeline test, when the CEED
# stage opened the dataset's video after the RPD stage). This switch makes it skip the preexec_fn.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

__version__ = "0.1.0"
