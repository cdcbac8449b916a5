// Three turns of one conversation on a Troupe thread through AG-UI's own client
// (@ag-ui/client's HttpAgent), as a frontend with shared state and a frontend tool
// holds it: turn 1 asks, a server tool changes the state and the model calls the
// frontend tool `confirm`; the client answers it, changes the state itself, and turn 2
// goes on; turn 3 asks again, forwarding props. Prints, as JSON, every event the
// client saw (per turn), its state after each turn, and its messages at the end.
import { HttpAgent } from "@ag-ui/client";

const [url, threadId] = process.argv.slice(2);
const CONFIRM = {
  name: "confirm",
  description: "Ask the person to confirm.",
  parameters: { type: "object", properties: { question: { type: "string" } } },
};

const agent = new HttpAgent({ url, threadId, initialState: { owner: "Ann", items: [] } });
const turns = [];

async function turn(text, parameters = {}) {
  if (text !== null) {
    agent.addMessage({ id: `user-${turns.length}`, role: "user", content: text });
  }
  const events = [];
  const sent = structuredClone(agent.state);
  await agent.runAgent(
    { runId: crypto.randomUUID(), tools: [CONFIRM], ...parameters },
    {
      onEvent: ({ event }) => { events.push(event); },
      onRunFailed: ({ error }) => { console.error("run failed:", error); process.exitCode = 3; },
    },
  );
  turns.push({ sent, events, state: structuredClone(agent.state) });
}

await turn("add milk");
// the frontend tool the model called: answered here, as a frontend does
const call = agent.messages.flatMap((m) => m.toolCalls ?? []).find((c) => c.function.name === "confirm");
agent.addMessage({ id: "answer-1", role: "tool", toolCallId: call.id, content: "yes, add tea" });
agent.setState({ ...agent.state, note: "set by the client" });
await turn(null);
await turn("check out", { forwardedProps: { locale: "de" } });

console.log(JSON.stringify({ turns, messages: agent.messages }));
