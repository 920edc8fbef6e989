"""fedexec.serve, the classic way: serve.start(), a function deployment, .deploy(),
then plain HTTP requests.

The "model" is a tiny naive Bayes sentiment classifier trained here on a few
sentences (no downloads). Run: ``python examples/serve_classic.py``.
"""

import collections
import math

import requests

import fedexec
from fedexec import serve

TRAINING = [
    ("what a great and lovely day", "positive"), ("i love this wonderful film", "positive"),
    ("excellent food and friendly staff", "positive"), ("happy with the great result", "positive"),
    ("this is terrible and sad", "negative"), ("i hate the awful weather", "negative"),
    ("the worst film i have seen", "negative"), ("bad service and cold food", "negative"),
]


def train(examples):
    """Word counts per label: a multinomial naive Bayes model as plain dicts."""
    counts = {label: collections.Counter() for _, label in examples}
    for text, label in examples:
        counts[label].update(text.split())
    vocab = {w for c in counts.values() for w in c}
    return counts, len(vocab)


COUNTS, VOCAB = train(TRAINING)


def classify(text):
    scores = {}
    for label, words in COUNTS.items():
        total = sum(words.values())
        scores[label] = sum(math.log((words[w] + 1) / (total + VOCAB)) for w in text.split())
    return max(scores, key=scores.get)


@serve.deployment
def model(request):
    query = request.query_params["query"]
    return {"query": query, "sentiment": classify(query.lower())}


class FakeRequest:
    """What a handle call may pass instead of an HTTP request."""

    def __init__(self, query):
        self.query_params = {"query": query}


if __name__ == "__main__":
    fedexec.init(num_cpus=2)
    serve.start()
    model.deploy()
    for query in ("what a lovely film", "awful and sad weather"):
        r = requests.get("http://localhost:8000/model", params={"query": query}, timeout=30)
        print(r.json())
    print("through a handle:", fedexec.get(model.get_handle().remote(FakeRequest("great day"))))
    serve.shutdown()
    fedexec.shutdown()
