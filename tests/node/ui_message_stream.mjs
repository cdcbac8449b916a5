// Runs a Troupe agent through the Vercel AI SDK's own chat transport and reader (what
// useChat does: DefaultChatTransport, then readUIMessageStream), and prints the final
// UI message as JSON.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [url, question] = process.argv.slice(2);
const transport = new DefaultChatTransport({ api: url });
const stream = await transport.sendMessages({
  chatId: "chat-1",
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
  messages: [{ id: "user-1", role: "user", parts: [{ type: "text", text: question }] }],
});
let last;
for await (const message of readUIMessageStream({
  stream,
  onError: (error) => { console.error("stream error:", error); process.exitCode = 3; },
})) {
  last = message;
}
console.log(JSON.stringify(last));
