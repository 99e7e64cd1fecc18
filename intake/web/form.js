// The public registration form's script, an ES module whose parts sit beside it:
// form-check.js checks every field as the server does, form-send.js posts with an
// Idempotency-Key and tries again, form-status.js follows the registration's status.
import { jakartaToday, retryDelay } from "./form-base.js";
import { validate } from "./form-check.js";
import { startForm } from "./form-send.js";
import { STATUS_HASH, showStatus } from "./form-status.js";

// For the browser tests, which check these against the server's validator and the
// backoff's bounds.
window.gelombangForm = { validate, jakartaToday, retryDelay };

startForm();
const found = STATUS_HASH.exec(location.hash);
if (found) showStatus(found[1]);
