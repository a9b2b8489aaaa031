"""Pretrained weights shipped with the package, and the records of how they were trained.

* ``glow_mnist.pt`` and ``glow_mnist.json``: chapter 9's Glow trained on the shipped MNIST
  digits by ``tools/train_image_flows.py``; load it with
  ``nfcourse.flows.image.pretrained_glow()``.
"""
