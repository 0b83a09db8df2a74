"""The anchor for bench/serve.py: a hello-world kn func Python function returning a small JSON."""

BODY = b'{"hello":"world"}'


class Hello:
    async def handle(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": BODY})

    def start(self, cfg):
        pass

    def stop(self):
        pass

    def alive(self):
        return True

    def ready(self):
        return True


def new():
    return Hello()
