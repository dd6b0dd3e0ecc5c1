"""What one document may ask for, checked before anything runs: one root field per mutation (a
refused action can never hide a recorded one), and a bounded number of rows in all (the sum of
every `first`/`last` it asks for, aliases included), so no caller can hold the service's loop."""

from __future__ import annotations

from typing import Any, Final

from graphql import (
    FieldNode,
    GraphQLError,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    ValidationContext,
    ValidationRule,
)

MAX_ROWS_PER_DOCUMENT: Final = 5000
SIZE_ARGUMENTS: Final = frozenset({"first", "last"})
UNSIZED_ROWS: Final = 100
"""What a list field counts for without a size argument (its defaults are at most 100)."""
VARIABLE_ROWS: Final = 1000
"""What a size given by a variable counts for (the most any field takes)."""
LIST_FIELDS: Final = frozenset(
    {"orders", "decisions", "transitions", "history", "events", "dlq", "budget", "explainDecision", "positions", "truth", "venues"}
)
"""Fields that read rows; each counts at least one row even without a size argument."""


class OneActionPerMutation(ValidationRule):
    """A mutation document holds exactly one root field (one action, one outcome, one status)."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        if node.operation == OperationType.MUTATION and len(node.selection_set.selections) != 1:
            self.report_error(
                GraphQLError(
                    "a mutation document takes exactly one action (one root field): send each action on its own",
                    node,
                    extensions={"code": "INVALID_ARGUMENT", "status": 400},
                )
            )


class RowBudget(ValidationRule):
    """The rows a document may ask for, in all."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.rows = 0
        self.reported = False

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.name.value not in LIST_FIELDS:
            return
        size = UNSIZED_ROWS
        for argument in node.arguments or ():
            if argument.name.value in SIZE_ARGUMENTS:
                value = argument.value
                # A variable may carry up to a field's maximum: count it as that.
                size = int(value.value) if isinstance(value, IntValueNode) else VARIABLE_ROWS
        self.rows += max(size, 1)
        if self.rows > MAX_ROWS_PER_DOCUMENT and not self.reported:
            self.reported = True
            self.report_error(
                GraphQLError(
                    f"this document asks for more than {MAX_ROWS_PER_DOCUMENT} rows in all (sum of first/last over every field "
                    "and alias): ask for fewer, or page",
                    node,
                    extensions={"code": "TOO_COSTLY", "status": 400},
                )
            )
