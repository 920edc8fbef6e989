"""fedexec.serve, the modern way: an application of two deployments.

``Classifier`` holds a scikit-learn model trained at start (the iris data ships
with scikit-learn: no downloads) and predicts in batches (``@serve.batch``), with
autoscaling between 1 and 2 replicas; ``Gateway`` is the HTTP ingress that
validates the JSON body and calls the classifier through its handle.
Run: ``python examples/serve_app.py``.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from starlette.responses import JSONResponse

import fedexec
from fedexec import serve


@serve.deployment(max_ongoing_requests=32, autoscaling_config={
    "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4,
    "upscale_delay_s": 1, "downscale_delay_s": 5})
class Classifier:
    def __init__(self):
        iris = load_iris()
        self.names = list(iris.target_names)
        self.model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict(self, rows):
        labels = self.model.predict(np.array(rows))
        return [self.names[i] for i in labels]


@serve.deployment
class Gateway:
    def __init__(self, classifier):
        self.classifier = classifier

    async def __call__(self, request):
        body = await request.json()
        features = body.get("features")
        if not (isinstance(features, list) and len(features) == 4):
            return JSONResponse({"error": "send {\"features\": [4 numbers]}"}, status_code=400)
        return {"species": await self.classifier.predict.remote(features)}


app = Gateway.bind(Classifier.bind())

if __name__ == "__main__":
    fedexec.init(num_cpus=2)
    serve.run(app, route_prefix="/iris")
    samples = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 20

    def ask(features):
        return requests.post("http://127.0.0.1:8000/iris", json={"features": features},
                             timeout=30).json()["species"]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, samples))
    print("predictions:", answers[:3], f"({len(answers)} requests)")
    bad = requests.post("http://127.0.0.1:8000/iris", json={"features": [1]}, timeout=30)
    print("bad input ->", bad.status_code, bad.json())
    status = serve.status().applications["default"]
    print("status:", status.status, {n: d.replica_states for n, d in status.deployments.items()})
    serve.shutdown()
    fedexec.shutdown()
