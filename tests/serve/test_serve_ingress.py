"""``@serve.ingress(FastAPI())``: the app's routes under the deployment's prefix,
methods bound to each replica's instance."""

import os

import pytest
import requests

from fedexec import serve

fastapi = pytest.importorskip("fastapi")
from pydantic import BaseModel  # noqa: E402

T = 30
api = fastapi.FastAPI()


class Item(BaseModel):
    name: str
    price: float


@api.get("/health")
def health():
    return {"ok": True}


@serve.deployment(num_replicas=2)
@serve.ingress(api)
class Shop:
    def __init__(self, tax: float) -> None:
        self.tax = tax

    @api.get("/items/{item_id}")
    def item(self, item_id: int, q: str = ""):
        return {"item_id": item_id, "q": q, "replica": f"{os.getpid()}:{id(self)}"}

    @api.post("/price")
    async def price(self, item: Item):
        return {"name": item.name, "total": round(item.price * (1 + self.tax), 2)}


def test_fastapi_ingress(serve_url):
    serve.run(Shop.bind(0.5), name="shop", route_prefix="/shop")
    r = requests.get(f"{serve_url}/shop/items/7?q=x", timeout=T)
    assert r.status_code == 200, r.text
    assert r.json()["item_id"] == 7 and r.json()["q"] == "x"
    r = requests.post(f"{serve_url}/shop/price", json={"name": "pen", "price": 2.0}, timeout=T)
    assert r.json() == {"name": "pen", "total": 3.0}
    r = requests.post(f"{serve_url}/shop/price", json={"name": "pen"}, timeout=T)
    assert r.status_code == 422 and "price" in r.text
    assert requests.get(f"{serve_url}/shop/health", timeout=T).json() == {"ok": True}
    assert requests.get(f"{serve_url}/shop/nope", timeout=T).status_code == 404
    replicas = {requests.get(f"{serve_url}/shop/items/1", timeout=T).json()["replica"]
                for _ in range(30)}
    assert len(replicas) == 2
    serve.delete("shop")
