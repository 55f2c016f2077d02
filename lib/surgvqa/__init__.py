"""SurgViVQA-Audio research library shared by the numbered notebooks.

Submodules are imported on demand (`from surgvqa import data`) so that light notebooks
do not pay for torch/transformers imports they do not use.
"""
__version__ = "0.1.0"

import logging as _logging


class _LibraryNoise(_logging.Filter):
    """Drops library log lines that say nothing about the study (they opened every report in red).

    Set here, on the package's first import, because they are logged when the library is imported."""

    # bitsandbytes tries to fetch an optional CPU kernel from the Hub, which no machine here reaches;
    # its own CPU code path runs instead
    NOISE = {"bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
             # Trainer sorting checkpoints saved within a second of each other (short runs); it sorts by step
             "transformers.trainer_utils": ("mtime may not be reliable on this filesystem",)}

    def filter(self, record: _logging.LogRecord) -> bool:
        return not any(str(record.msg).startswith(p) for p in self.NOISE.get(record.name, ()))


for _name in _LibraryNoise.NOISE:
    _logging.getLogger(_name).addFilter(_LibraryNoise())
