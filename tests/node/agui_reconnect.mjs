// AG-UI's own client (@ag-ui/client) leaving a run and coming back to it: one HttpAgent
// runs a slow answer on a thread (?resumable=true, so that the run goes on without its
// client) and aborts it (abortRun, the client's own stop); a second agent on the same
// thread reconnects with connectAgent, whose connect (which HttpAgent 1.0.0 leaves
// unimplemented) reads GET /ag-ui/{threadId}/stream with the package's own SSE reader;
// then POST /ag-ui/{threadId}/stop cancels the run. Prints what each saw, as JSON.
import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";

const [base, performer] = process.argv.slice(2);
const threadId = `thread-${crypto.randomUUID()}`;

class Reconnecting extends HttpAgent {
  connect(input) {
    const url = `${base}/ag-ui/${encodeURIComponent(input.threadId)}/stream`;
    return transformHttpEventStream(
      runHttpRequest(() => fetch(url, { headers: { Accept: "text/event-stream" } })),
    );
  }
}

const question = [{ id: "user-1", role: "user", content: "tell me slowly" }];
const first = new HttpAgent({ url: `${base}/ag-ui?performer=${performer}&resumable=true`, threadId });
first.messages = structuredClone(question);
let firstText = "";
const running = first
  .runAgent({ runId: crypto.randomUUID() }, {
    onTextMessageContentEvent: ({ event }) => {
      firstText += event.delta;
      if (firstText.length >= 20) first.abortRun();
    },
  })
  .catch((error) => `aborted: ${error.name}`);
const firstEnd = await running;

const second = new Reconnecting({ url: `${base}/ag-ui`, threadId });
second.messages = structuredClone(question);
const types = [];
let secondText = "";
let stopped;
const connected = await second
  .connectAgent({}, {
    onEvent: ({ event }) => { types.push(event.type); },
    onTextMessageContentEvent: ({ event }) => {
      secondText += event.delta;
      if (stopped === undefined && secondText.length > firstText.length + 20) {
        stopped = fetch(`${base}/ag-ui/${threadId}/stop`, { method: "POST" }).then((r) => r.status);
      }
    },
    onRunFailed: () => ({ stopPropagation: true }),
  })
  .then(() => "done", (error) => `failed: ${error.message}`);
console.log(
  JSON.stringify({
    firstText,
    firstEnd: typeof firstEnd === "string" ? firstEnd : "finished",
    secondText,
    types,
    connected,
    stop: await stopped,
  }),
);
