"""A stage in this process, driven through a LocalLink: a reply to a message sent without
waiting is kept for the next ``receive``, as a stream would keep it."""

from hydra.p2p.streams import Outbox
from hydra.stage.links import LocalLink
from protocols import inference
from protocols.codec import Message


class Echo:
    """Answers every message with a ``SessionClosed``; pushes a ``Progress`` when closed."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def handle(self, message: Message) -> Message | None:
        return inference.SessionClosed()

    async def aclose(self) -> None:
        await self.outbox.send(inference.Progress((7,)))


async def test_a_reply_to_a_sent_message_waits_for_the_next_receive() -> None:
    link = LocalLink("local", Echo)
    await link.send(inference.CloseSession(), 1.0)
    assert isinstance(await link.receive(1.0), inference.SessionClosed)
    await link.aclose()  # what the conversation sends unasked arrives the same way
    assert await link.receive(1.0) == inference.Progress((7,))
