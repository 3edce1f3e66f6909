"""Importance matrices: per-column mean squared input activations of every quantized weight, collected
from the SO8T model (``collect``) and stored in llama.cpp's imatrix GGUF format (``file``)."""

from so8t.imatrix.file import Imatrix, read_imatrix, write_imatrix

__all__ = ["Imatrix", "read_imatrix", "write_imatrix"]
