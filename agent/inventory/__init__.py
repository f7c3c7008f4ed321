"""What the agent knows about the server it runs on: the model and its collection."""

from agent.inventory.model import SCHEMA_VERSION, Inventory, SchemaError

__all__ = ["SCHEMA_VERSION", "Inventory", "SchemaError"]
