"""Handlers of the queue's contents, history and descriptions: bluesky-queueserver's editing methods."""

from __future__ import annotations

from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.errors import InvalidParams, InvalidState

from .core import echo_item, error_text
from .execution import ExecutionHandlers
from .permissions import PermissionsError
from .plan_queue import QueueError

__all__ = ["ContentsHandlers"]


class ContentsHandlers(ExecutionHandlers):
    """Handlers of the queue's contents, history and descriptions: bluesky-queueserver's editing methods."""

    async def _plans_allowed(self, msg: q.PlansAllowed) -> q.PlansAllowedReply:
        group = self._known_group(msg.user_group)
        return q.PlansAllowedReply(
            plans_allowed=self.validator.allowed_plans[group], plans_allowed_uid=self.status.plans_allowed_uid
        )

    async def _devices_allowed(self, msg: q.DevicesAllowed) -> q.DevicesAllowedReply:
        group = self._known_group(msg.user_group)
        return q.DevicesAllowedReply(
            devices_allowed=self.validator.allowed_devices[group],
            devices_allowed_uid=self.status.devices_allowed_uid,
        )

    async def _plans_existing(self, msg: q.PlansExisting) -> q.PlansExistingReply:
        return q.PlansExistingReply(
            plans_existing=self.existing_plans, plans_existing_uid=self.status.plans_existing_uid
        )

    async def _devices_existing(self, msg: q.DevicesExisting) -> q.DevicesExistingReply:
        return q.DevicesExistingReply(
            devices_existing=self.existing_devices, devices_existing_uid=self.status.devices_existing_uid
        )

    async def _re_runs(self, msg: q.ReRuns) -> q.RunsReply:
        runs = self.run_list
        if msg.option == "open":
            runs = [r for r in runs if r["is_open"]]
        elif msg.option == "closed":
            runs = [r for r in runs if not r["is_open"]]
        return q.RunsReply(run_list=runs, run_list_uid=self.status.run_list_uid)

    async def _re_metadata(self, msg: q.ReMetadata) -> q.ReMetadataReply:
        if self.worker.state != "open":
            raise InvalidState("Environment does not exist. Cannot retrieve RE metadata.")
        reply = await self.ctx.ask(w.RE_WORKER, w.GetReMetadata())
        return q.ReMetadataReply(re_metadata=reply.re_metadata)

    async def _queue_get(self, msg: q.QueueGet) -> q.QueueGetReply:
        items = self.pq.items
        stop = None if msg.limit is None else msg.offset + max(msg.limit, 0)
        return q.QueueGetReply(
            items=items[max(msg.offset, 0) : stop],
            running_item=self.pq.running_item or {},
            plan_queue_uid=self.pq.plan_queue_uid,
        )

    async def _queue_item_add(self, msg: q.QueueItemAdd) -> q.ItemReply:
        try:
            item = self._prepared(msg.item, msg.user, msg.user_group)
            added, changes = self.pq.add_item(
                item, pos=msg.pos, before_uid=msg.before_uid, after_uid=msg.after_uid
            )
        except (QueueError, PermissionsError, InvalidParams) as exc:
            return q.ItemReply(
                success=False,
                msg=f"Failed to add an item: {error_text(exc)}",
                item=echo_item(msg.item),
                error_code=InvalidParams.code,
            )
        await self._persist(changes)
        await self._maybe_autostart()
        return q.ItemReply(item=added, qsize=self.pq.queue_size)

    async def _queue_item_add_batch(self, msg: q.QueueItemAddBatch) -> q.BatchAddReply:
        items = msg.items
        if not isinstance(items, list):
            raise InvalidParams(
                f"Failed to add a batch of items: 'items' must be a list, not {type(items).__name__}"
            )
        prepared, results = [], []
        for item in items:
            try:
                prepared.append(self._prepared(item, msg.user, msg.user_group))
                results.append({"success": True, "msg": ""})
            except (PermissionsError, InvalidParams, QueueError) as exc:
                results.append({"success": False, "msg": f"Failed to add a plan: {error_text(exc)}"})
        failed = sum(1 for r in results if not r["success"])
        if failed:
            return q.BatchAddReply(
                success=False,
                msg=f"Failed to add all items: validation of {failed} out of {len(items)} "
                "submitted items failed",
                items=items,
                results=results,
                error_code=InvalidParams.code,
            )
        try:
            added, changes = self.pq.add_batch(
                prepared, pos=msg.pos, before_uid=msg.before_uid, after_uid=msg.after_uid
            )
        except QueueError as exc:
            text = f"Failed to add item to queue: {exc}"
            return q.BatchAddReply(
                success=False,
                msg=f"Failed to add all items: {text}",
                items=items,
                results=[{"success": False, "msg": text} for _ in items],
                error_code=InvalidParams.code,
            )
        await self._persist(changes)
        await self._maybe_autostart()
        return q.BatchAddReply(items=added, results=results, qsize=self.pq.queue_size)

    async def _queue_item_update(self, msg: q.QueueItemUpdate) -> q.ItemReply:
        try:
            item = self._prepared(msg.item, msg.user, msg.user_group)
            item["item_uid"] = msg.item.get("item_uid")  # _prepared dropped it; update needs it
            if item["item_uid"] is None:
                del item["item_uid"]
            updated, changes = self.pq.replace_item(item, replace=msg.replace)
        except (QueueError, PermissionsError, InvalidParams) as exc:
            return q.ItemReply(
                success=False,
                msg=f"Failed to update an item: {error_text(exc)}",
                item=echo_item(msg.item),
                error_code=InvalidParams.code,
            )
        await self._persist(changes)
        return q.ItemReply(item=updated, qsize=self.pq.queue_size)

    async def _queue_item_get(self, msg: q.QueueItemGet) -> q.ItemReply:
        item = self._queue_op("Failed to get an item", lambda: self.pq.get_item(pos=msg.pos, uid=msg.uid))
        return q.ItemReply(item=item)

    async def _queue_item_remove(self, msg: q.QueueItemRemove) -> q.ItemReply:
        item, changes = self._queue_op(
            "Failed to remove an item", lambda: self.pq.remove_item(pos=msg.pos, uid=msg.uid)
        )
        await self._persist(changes)
        return q.ItemReply(item=item, qsize=self.pq.queue_size)

    async def _queue_item_remove_batch(self, msg: q.QueueItemRemoveBatch) -> q.ItemsReply:
        items, changes = self._queue_op(
            "Failed to remove a batch of items",
            lambda: self.pq.remove_batch(msg.uids, ignore_missing=msg.ignore_missing),
        )
        await self._persist(changes)
        return q.ItemsReply(items=items, qsize=self.pq.queue_size)

    async def _queue_item_move(self, msg: q.QueueItemMove) -> q.ItemReply:
        item, changes = self._queue_op(
            "Failed to move the item",
            lambda: self.pq.move_item(
                pos=msg.pos,
                uid=msg.uid,
                pos_dest=msg.pos_dest,
                before_uid=msg.before_uid,
                after_uid=msg.after_uid,
            ),
        )
        await self._persist(changes)
        return q.ItemReply(item=item, qsize=self.pq.queue_size)

    async def _queue_item_move_batch(self, msg: q.QueueItemMoveBatch) -> q.ItemsReply:
        items, changes = self._queue_op(
            "Failed to move the batch of items",
            lambda: self.pq.move_batch(
                msg.uids,
                pos_dest=msg.pos_dest,
                before_uid=msg.before_uid,
                after_uid=msg.after_uid,
                reorder=msg.reorder,
            ),
        )
        await self._persist(changes)
        return q.ItemsReply(items=items, qsize=self.pq.queue_size)

    async def _queue_clear(self, msg: q.QueueClear) -> q.Reply:
        await self._persist(self.pq.clear())
        return q.Reply()

    async def _queue_mode_set(self, msg: q.QueueModeSet) -> q.Reply:
        if msg.mode is None:
            raise InvalidParams("Failed to set queue mode: parameter 'mode' is required")
        changes = self._queue_op("Failed to set queue mode", lambda: self.pq.set_mode(msg.mode))
        await self._persist(changes)
        return q.Reply()

    async def _history_get(self, msg: q.HistoryGet) -> q.HistoryGetReply:
        page = self._queue_op("Error", lambda: self.pq.history_get(offset=msg.offset, limit=msg.limit))
        return q.HistoryGetReply(items=page["items"], plan_history_uid=page["plan_history_uid"])

    async def _history_clear(self, msg: q.HistoryClear) -> q.Reply:
        changes = self._queue_op("Error", lambda: self.pq.clear_history(size=msg.size, item_uid=msg.item_uid))
        await self._persist(changes)
        return q.Reply()
