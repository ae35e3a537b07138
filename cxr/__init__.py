"""cxr: train and use convolutional networks that tell a normal chest X-ray from pneumonia.

Importing the package is cheap: TensorFlow, OpenCV and pydicom are imported lazily inside the
functions that need them, so the app's first page and ``import cxr`` start fast.
"""

__version__ = "0.1.0"
