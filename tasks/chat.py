"""chat: the user's own conversations, multi-turn, from a local file or a LLaMA-Factory sharegpt entry.

Data: rows of OpenAI `messages` ({role: system|user|assistant, content}) or ShareGPT `conversations` ({from:
human|gpt|system, value}; other role names and keys through `tags`), one format a file, each ending on an assistant
reply (see fasttune.own_data.OwnDataConfig for files, splits and scoring options). Training puts the loss on every
assistant turn (train_on="last": the last one only); correct = the last reply, by the declared labels or the named
metrics.
"""

from fasttune.chat_task import ConversationTask


class Chat(ConversationTask):
    name = "chat"
    formatting = "chat"
