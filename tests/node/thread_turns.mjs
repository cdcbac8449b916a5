// Two turns of one conversation on a Troupe thread, through each frontend's own client:
// AG-UI's HttpAgent (its threadId) and the AI SDK's DefaultChatTransport with
// readUIMessageStream (its chat id). Each sends its whole history, as both do by
// default; prints what each client holds after the second turn as JSON.
import { HttpAgent } from "@ag-ui/client";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, performer, first, second] = process.argv.slice(2);
const query = `?performer=${encodeURIComponent(performer)}`;

const agent = new HttpAgent({ url: `${base}/ag-ui${query}`, threadId: `agui-${crypto.randomUUID()}` });
for (const [n, text] of [first, second].entries()) {
  agent.messages.push({ id: `user-${n}`, role: "user", content: text });
  await agent.runAgent({ runId: crypto.randomUUID() });
}

const transport = new DefaultChatTransport({ api: `${base}/api/chat${query}` });
const chatId = `chat-${crypto.randomUUID()}`;
const messages = [];
for (const [n, text] of [first, second].entries()) {
  messages.push({ id: `user-${n}`, role: "user", parts: [{ type: "text", text }] });
  const stream = await transport.sendMessages({
    chatId,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    messages,
  });
  let last;
  for await (const message of readUIMessageStream({
    stream,
    onError: (error) => { console.error("stream error:", error); process.exitCode = 3; },
  })) {
    last = message;
  }
  messages.push(last);
}

console.log(
  JSON.stringify({
    agui: { threadId: agent.threadId, messages: agent.messages },
    chat: { id: chatId, messages },
  }),
);
