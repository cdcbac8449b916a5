// A multi-turn chat with a Troupe agent through the AI SDK 6's own Chat (AbstractChat,
// what useChat wraps, with DefaultChatTransport and its stream reader, which checks
// every chunk against its schema):
//   1. a server tool (lookup) runs and the agent answers;
//   2. the agent calls a client tool (confirm, declared on the server without a body):
//      onToolCall answers it with addToolOutput, and sendAutomaticallyWhen
//      (lastAssistantMessageIsCompleteWithToolCalls) sends the result, which continues
//      the run in the same assistant message; the agent reports what it was given;
//   3. a slow answer: the first Chat stops reading mid-run (as a page reload does), a
//      second Chat on the same id resumes the stream (GET /api/chat/{id}/stream), the
//      run goes on meanwhile, and POST /api/chat/{id}/stop cancels it;
//   4. the agent reports the whole conversation it was given.
// Prints what the chats hold as JSON.
import {
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai-v6";
import { Chat } from "./chat.mjs";

const [base, performer] = process.argv.slice(2);
const api = `${base}/api/chat?performer=${encodeURIComponent(performer)}`;
const chatId = `chat-${crypto.randomUUID()}`;

const errors = [];
const toolCalls = [];
const finishes = [];
function newChat(messages) {
  const chat = new Chat({
    id: chatId,
    messages,
    // the run goes on if this client leaves, so that another can resume it
    transport: new DefaultChatTransport({ api, body: { resumable: true } }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      toolCalls.push(toolCall);
      if (toolCall.toolName === "confirm") {
        // not awaited: the SDK says so (awaiting it in onToolCall would deadlock)
        chat.addToolOutput({ tool: "confirm", toolCallId: toolCall.toolCallId, output: "yes" });
      }
    },
    onFinish: ({ isAbort, isDisconnect, isError, finishReason }) => {
      finishes.push({ isAbort, isDisconnect, isError, finishReason: finishReason ?? null });
    },
    onError: (error) => { errors.push(String(error)); },
  });
  return chat;
}

async function settled(chat, seconds = 20) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const last = chat.messages.at(-1);
    const waiting = last?.role === "assistant" && lastAssistantMessageIsCompleteWithToolCalls({ messages: chat.messages });
    if (chat.status === "ready" || chat.status === "error") {
      if (!waiting) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`the chat did not settle: ${chat.status}`);
}

const text = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

const first = newChat([]);
await first.sendMessage({ text: "look up 7" });
await settled(first);
await first.sendMessage({ text: "confirm it" });
await settled(first);
const afterTwo = structuredClone(first.messages);

// 3: a slow answer, left mid-run and resumed by another client
const slow = first.sendMessage({ text: "tell me slowly" });
const deadline = Date.now() + 20000;
const answering = (chat) => chat.messages.length === afterTwo.length + 2 ? text(chat.messages.at(-1)) : "";
while (Date.now() < deadline && answering(first).length < 20) {
  await new Promise((resolve) => setTimeout(resolve, 10));
}
const leftAt = answering(first);
await first.stop(); // the client goes away (its fetch is aborted)
await slow;
// a page reload: the messages as the server kept them, up to the question
const second = newChat(structuredClone(first.messages.slice(0, -1)));
const resumed = second.resumeStream();
while (Date.now() < deadline && answering(second).length <= leftAt.length + 20) {
  await new Promise((resolve) => setTimeout(resolve, 10));
}
const resumedAt = answering(second);
const stopped = await fetch(`${base}/api/chat/${chatId}/stop`, { method: "POST" });
await resumed;
const stoppedStatus = second.status;
const stopBody = await stopped.json();
// nothing goes on now: a resume finds no stream (204) and the chat stays as it is
const before = second.messages.length;
await second.resumeStream();
const noStream = { status: second.status, messages: second.messages.length - before };
const again = await fetch(`${base}/api/chat/${chatId}/stop`, { method: "POST" });

// 4: the whole conversation, reported
await second.sendMessage({ text: "report" });
await settled(second);

if (errors.length) { console.error(errors.join("\n")); process.exitCode = 3; }
console.log(
  JSON.stringify({
    chatId,
    afterTwo,
    toolCalls,
    finishes,
    leftAt,
    resumedAt,
    stop: { status: stopped.status, body: stopBody, again: again.status },
    stoppedStatus,
    noStream,
    messages: second.messages,
    status: second.status,
  }),
);
