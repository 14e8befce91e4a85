"""instruction: the user's own alpaca rows, from a local file or a LLaMA-Factory alpaca entry.

Data: rows of `instruction`, optional `input` (joined to it by a newline, as LLaMA-Factory does), `output`, optional
`system` and `history` ([[instruction, output], ...] earlier turns); other column names through `columns`
({prompt: question, response: answer}; see fasttune.own_data.OwnDataConfig). Training puts the loss on the output
and the history's outputs (train_on="last": the output only); correct = the output, by the declared labels or the
named metrics.
"""

from fasttune.chat_task import ConversationTask


class Instruction(ConversationTask):
    name = "instruction"
    formatting = "alpaca"
