// Pauses and resumes a Troupe agent the way useChat does it in AI SDK 6 (the `ai`
// package's own AbstractChat, DefaultChatTransport and stream reader, which checks
// every chunk against its schema): the first request's stream asks for approval
// (a tool part in state approval-requested), addToolApprovalResponse answers it, and
// sendAutomaticallyWhen sends the answer, which continues the run. Prints the chat's
// messages as JSON.
import {
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
} from "ai-v6";
import { Chat } from "./chat.mjs";

const [url, question, answer] = process.argv.slice(2);

const errors = [];
const chat = new Chat({
  transport: new DefaultChatTransport({ api: url }),
  sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  onError: (error) => { errors.push(String(error)); },
});
const toolParts = () => chat.messages.flatMap((m) => m.parts).filter((p) => p.type.startsWith("tool-"));

await chat.sendMessage({ text: question });
const asked = toolParts().filter((p) => p.state === "approval-requested");
const firstStates = toolParts().map((p) => p.state);
for (const part of asked) {
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: answer === "approve", reason: "said so" });
}
const deadline = Date.now() + 15000;
while (
  Date.now() < deadline &&
  (chat.status !== "ready" || toolParts().some((p) => p.state.startsWith("approval-")))
) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
if (errors.length) { console.error(errors.join("\n")); process.exitCode = 3; }
console.log(JSON.stringify({ firstStates, asked, messages: chat.messages, status: chat.status }));
