"""Train the digit classifier that measures generated digits (chapter 9) and save it.

    python tools/train_digit_classifier.py

``nfcourse.applications.digit_quality.fit_digit_classifier`` on the 4,000 training digits
of ``load_mnist(with_labels=True)``; the weights go to
``nfcourse/pretrained/digit_classifier.pt`` and the record (budget, seed, machine, torch,
wall time, test accuracy, the share of confident answers on real test digits, on uniform
noise, on test digits with shuffled pixels and on blank images) to
``digit_classifier.json``. One thread.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import torch

from nfcourse.applications.digit_quality import confident_share, fit_digit_classifier
from nfcourse.images import load_mnist
from nfcourse.pretrained import DIGIT_CLASSIFIER_SETTINGS, digit_classifier_paths


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    train, train_labels, test, test_labels = load_mnist(with_labels=True)
    classifier = fit_digit_classifier(train, train_labels, **DIGIT_CLASSIFIER_SETTINGS)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((classifier(test).argmax(-1) == test_labels).float().mean())
    fresh = torch.Generator().manual_seed(12345)  # not the seeds of training
    noise = torch.rand(1000, 784, generator=fresh)
    shuffled = test.gather(1, torch.rand(test.shape, generator=fresh).argsort(dim=1))
    weights, record_path = digit_classifier_paths()
    torch.save(classifier.state_dict(), weights)
    record = {
        "model": "DigitClassifier()",
        "command": "python tools/train_digit_classifier.py",
        "data": "load_mnist(with_labels=True): 4,000 training and 1,000 test digits",
        **DIGIT_CLASSIFIER_SETTINGS,
        "train_seconds": round(seconds, 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": 1,
        "machine": f"{platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "test_accuracy": round(accuracy, 4),
        "confident_share_test": round(confident_share(classifier, test), 4),
        "confident_share_uniform_noise": round(confident_share(classifier, noise), 4),
        "confident_share_shuffled_test": round(confident_share(classifier, shuffled), 4),
        "confident_share_blank": round(confident_share(classifier, torch.zeros(10, 784)), 4),
    }
    Path(record_path).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
