"""SurgViVQA-Audio research library shared by the numbered notebooks.

Submodules are imported on demand (`from surgvqa import data`) so that light notebooks
do not pay for torch/transformers imports they do not use.
"""
__version__ = "0.1.0"
