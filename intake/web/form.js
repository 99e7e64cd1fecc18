// The public registration form's script, an ES module whose parts sit beside it:
// form-check.js checks every field as the server does, form-send.js posts with an
// Idempotency-Key and tries again, form-queue.js waits in the waiting room's line for the
// turn, form-status.js follows the registration's status.
import { jakartaToday, retryDelay } from "./form-base.js";
import { validate } from "./form-check.js";
import { pollDelay } from "./form-queue.js";
import { resumeQueue, startForm } from "./form-send.js";
import { STATUS_HASH, showStatus } from "./form-status.js";

// For the browser tests, which check these against the server's validator and the
// backoff's and the line's polling bounds.
window.gelombangForm = { validate, jakartaToday, retryDelay, pollDelay };

startForm();
const found = STATUS_HASH.exec(location.hash);
if (found) showStatus(found[1]);
else resumeQueue();
