/**
 * The relay's clipboard filter (cliprdr) as a pure function, per role rule and direction: what
 * is forwarded, what the gateway answers itself, what is logged; chunked messages; file copy cut
 * out unless allowed; malformed input. Also the browser keyboard tables.
 */
import t from 'tap';
import {
  CB_CLIP_CAPS, CB_FILECONTENTS_REQUEST, CB_FILECONTENTS_RESPONSE, CB_FORMAT_DATA_REQUEST, CB_FORMAT_DATA_RESPONSE, CB_FORMAT_LIST,
  CB_RESPONSE_FAIL, CB_RESPONSE_OK, CB_STREAM_FILECLIP_ENABLED, CB_USE_LONG_FORMAT_NAMES, CF_UNICODETEXT, channelChunks, ClipboardFilter,
  encodeCaps, encodeClipMessage, encodeFormatList, encodeUnicodeText, parseCapsFlags, parseClipMessage, parseFormatList, type ClipboardEvent, type ClipboardRules,
} from '../../protocols/rdp/cliprdr.js';
import { ChannelAssembler, parseChannelChunk } from '../../protocols/rdp/channels.js';
import { RdpProtocolError } from '../../protocols/rdp/errors.js';
import { keyboardLayoutOf, scancodeOf } from '../../protocols/rdp/keyboard.js';

/** Reassemble channel PDUs into clipboard messages. */
function messages(pdus: Buffer[]) {
  const a = new ChannelAssembler(1 << 20);
  return pdus.flatMap((p) => { const m = a.push(parseChannelChunk(p)); return m ? [parseClipMessage(m.head)] : []; });
}

function filter(rules: ClipboardRules) {
  const events: ClipboardEvent[] = [];
  const f = new ClipboardFilter(rules, (e) => events.push(e), 64);
  // Both sides announce long format names and stream file clipping.
  const caps = encodeClipMessage(CB_CLIP_CAPS, 0, encodeCaps(CB_USE_LONG_FORMAT_NAMES | CB_STREAM_FILECLIP_ENABLED));
  const sc = f.push(false, channelChunks(caps)[0]!);
  const cc = f.push(true, channelChunks(caps)[0]!);
  const send = (fromClient: boolean, msg: Buffer) => {
    const out = { forward: [] as Buffer[], reply: [] as Buffer[] };
    for (const c of channelChunks(msg, 0x10, 64)) { const r = f.push(fromClient, c); out.forward.push(...r.forward); out.reply.push(...r.reply); }
    return { forward: messages(out.forward), reply: messages(out.reply), raw: out.forward };
  };
  return { f, events, send, caps: { server: messages(sc.forward)[0]!, client: messages(cc.forward)[0]! } };
}

const TEXT_AND_FILES = encodeClipMessage(CB_FORMAT_LIST, 0, encodeFormatList([
  { id: CF_UNICODETEXT, name: '' }, { id: 0xc0a1, name: 'FileGroupDescriptorW' }, { id: 0xc0a2, name: 'FileContents' }, { id: 0xc0b0, name: 'HTML Format' },
], true));
const requestText = () => { const b = Buffer.alloc(4); b.writeUInt32LE(CF_UNICODETEXT, 0); return encodeClipMessage(CB_FORMAT_DATA_REQUEST, 0, b); };
const textResponse = (s: string) => encodeClipMessage(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_OK, encodeUnicodeText(s));

t.test('both ways: text passes in both directions; file copy is cut out unless the role allows it', async (t) => {
  const { send, events, caps } = filter({ toServer: true, toClient: true, files: false });
  t.equal(parseCapsFlags(caps.server.data) & CB_STREAM_FILECLIP_ENABLED, 0, 'stream file clipping cleared in the target\'s capabilities');
  t.equal(parseCapsFlags(caps.client.data) & CB_STREAM_FILECLIP_ENABLED, 0, 'and in the client\'s');
  t.ok(parseCapsFlags(caps.client.data) & CB_USE_LONG_FORMAT_NAMES, 'other flags kept');
  const list = send(true, TEXT_AND_FILES);
  t.same(parseFormatList(list.forward[0]!.data, 0, true).map((f) => f.name), ['', 'HTML Format'], 'file formats taken out of the client\'s list');
  t.ok(list.raw.every((c) => c.length <= 72), 'the rewritten list is re-chunked at the channel chunk size');
  t.ok(events.some((e) => e.message === 'format_list' && e.files && e.allowed), 'logged as a list that had files in it');
  t.same(send(false, requestText()).forward.map((m) => m.type), [CB_FORMAT_DATA_REQUEST], 'the target\'s request for the text passes');
  const data = send(true, textResponse('hello from the laptop, long enough to span several chunks of sixty-four bytes'));
  t.equal(data.forward[0]!.type, CB_FORMAT_DATA_RESPONSE, 'the text goes to the target');
  t.match(events.at(-1), { message: 'format_data_response', direction: 'client_to_target', allowed: true, text: 'hello from the laptop, long enough to span several chunks of sixty-four bytes' }, 'the text is in the log');
  t.same(send(false, TEXT_AND_FILES).forward.length, 1, 'the target\'s list reaches the client');
  const fc = Buffer.alloc(28);
  fc.writeUInt32LE(77, 0);
  const req = send(false, encodeClipMessage(CB_FILECONTENTS_REQUEST, 0, fc));
  t.same(req.forward, [], 'a File Contents Request is not forwarded');
  t.equal(req.reply[0]!.type, CB_FILECONTENTS_RESPONSE, 'the gateway answers it');
  t.ok(req.reply[0]!.flags & CB_RESPONSE_FAIL, 'with a failure');
  t.equal(req.reply[0]!.data.readUInt32LE(0), 77, 'for the stream asked for');
  t.match(events.at(-1), { message: 'file_contents_request', allowed: false, files: true });
  t.same(send(true, encodeClipMessage(CB_FILECONTENTS_RESPONSE, CB_RESPONSE_OK, Buffer.alloc(100))).forward, [], 'file contents never pass');
});

t.test('fileTransfer: true lets file copy through', async (t) => {
  const { send, caps } = filter({ toServer: true, toClient: true, files: true });
  t.ok(parseCapsFlags(caps.server.data) & CB_STREAM_FILECLIP_ENABLED, 'capability kept');
  t.equal(parseFormatList(send(true, TEXT_AND_FILES).forward[0]!.data, 0, true).length, 4, 'file formats kept');
  t.equal(send(false, encodeClipMessage(CB_FILECONTENTS_REQUEST, 0, Buffer.alloc(28))).forward.length, 1, 'requests pass');
  t.equal(send(true, encodeClipMessage(CB_FILECONTENTS_RESPONSE, CB_RESPONSE_OK, Buffer.alloc(100))).forward.length, 1, 'and the contents');
});

t.test('to-server (gateway to desktop only): the desktop\'s clipboard never reaches the client', async (t) => {
  const { send, events } = filter({ toServer: true, toClient: false, files: false });
  const list = send(false, TEXT_AND_FILES);
  t.equal(list.forward[0]!.type, CB_FORMAT_LIST, 'the target\'s list still arrives (the exchange goes on)');
  t.same(parseFormatList(list.forward[0]!.data, 0, true), [], 'but empty');
  t.match(events.at(-1), { message: 'format_list', direction: 'target_to_client', allowed: false });
  const req = send(true, requestText());
  t.same(req.forward, [], 'a client asking anyway is not forwarded');
  t.equal(req.reply[0]!.type, CB_FORMAT_DATA_RESPONSE);
  t.ok(req.reply[0]!.flags & CB_RESPONSE_FAIL, 'it gets a failure');
  const data = send(false, textResponse('secret on the desktop'));
  t.same(data.forward, [], 'an unsolicited text from the target is dropped');
  t.match(events.at(-1), { message: 'format_data_response', direction: 'target_to_client', allowed: false, text: 'secret on the desktop' });
  t.equal(parseFormatList(send(true, TEXT_AND_FILES).forward[0]!.data, 0, true).length, 2, 'the client\'s own list goes to the target');
  t.same(send(false, requestText()).forward.length, 1, 'the target may ask for it');
  t.same(send(true, textResponse('paste me')).forward.length, 1, 'and gets it');
  const failed = send(false, encodeClipMessage(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_FAIL));
  t.equal(failed.forward.length, 1, 'a failure response carries nothing and passes either way');
});

t.test('to-client and none', async (t) => {
  const toClient = filter({ toServer: false, toClient: true, files: false });
  t.same(parseFormatList(toClient.send(true, TEXT_AND_FILES).forward[0]!.data, 0, true), [], 'to-client: the client\'s list is emptied');
  t.same(toClient.send(false, requestText()).forward, [], 'the target asking for the client\'s text is refused');
  t.same(toClient.send(true, textResponse('x')).forward, [], 'client text never reaches the target');
  t.equal(toClient.send(false, textResponse('y')).forward.length, 1, 'the desktop\'s text reaches the client');
  const none = filter({ toServer: false, toClient: false, files: false });
  t.same(parseFormatList(none.send(true, TEXT_AND_FILES).forward[0]!.data, 0, true), [], 'none: emptied one way');
  t.same(parseFormatList(none.send(false, TEXT_AND_FILES).forward[0]!.data, 0, true), [], 'and the other');
  t.same(none.send(true, textResponse('x')).forward, [], 'no text one way');
  t.same(none.send(false, textResponse('y')).forward, [], 'or the other');
  t.ok(none.events.filter((e) => !e.allowed).length >= 4, 'every refusal is logged');
});

t.test('short format names and malformed input', async (t) => {
  const events: ClipboardEvent[] = [];
  const f = new ClipboardFilter({ toServer: false, toClient: true, files: false }, (e) => events.push(e));
  // No capabilities exchanged: short (32-byte) names.
  const short = encodeClipMessage(CB_FORMAT_LIST, 0, encodeFormatList([{ id: CF_UNICODETEXT, name: 'text' }], false));
  const r = f.push(true, channelChunks(short)[0]!);
  t.same(parseFormatList(messages(r.forward)[0]!.data, 0, false), [], 'a short-name list is emptied too');
  const garbage = encodeClipMessage(CB_FORMAT_LIST, 0, Buffer.from([1, 2, 3]));
  const g = f.push(true, channelChunks(garbage)[0]!);
  t.same(messages(g.forward)[0]!.data.length, 0, 'a list that reads neither way is emptied where the rule refuses');
  t.throws(() => f.push(true, Buffer.from([1, 2, 3])), RdpProtocolError, 'a truncated channel header');
  t.throws(() => f.push(true, Buffer.concat([Buffer.from([4, 0, 0, 0, 3, 0, 0, 0]), Buffer.from([2, 0, 0, 0])])), RdpProtocolError, 'a clipboard header split across chunks');
  const big = Buffer.alloc(70_000);
  const chunks = channelChunks(encodeClipMessage(CB_FORMAT_LIST, 0, big));
  t.throws(() => { for (const c of chunks) f.push(false, c); }, RdpProtocolError, 'a format list larger than the filter collects');
});

t.test('browser keys: KeyboardEvent.code to scancodes; layouts from language tags', async (t) => {
  t.same(scancodeOf('KeyA'), { code: 0x1e, extended: false });
  t.same(scancodeOf('KeyZ'), { code: 0x2c, extended: false }, 'the physical key: the target applies the layout');
  t.same(scancodeOf('Digit0'), { code: 0x0b, extended: false });
  t.same(scancodeOf('Enter'), { code: 0x1c, extended: false });
  t.same(scancodeOf('NumpadEnter'), { code: 0x1c, extended: true });
  t.same(scancodeOf('ArrowLeft'), { code: 0x4b, extended: true });
  t.same(scancodeOf('AltRight'), { code: 0x38, extended: true });
  t.same(scancodeOf('F12'), { code: 0x58, extended: false });
  t.same(scancodeOf('MetaLeft'), { code: 0x5b, extended: true });
  t.equal(scancodeOf('constructor'), null, 'no prototype keys');
  t.equal(scancodeOf('Fn'), null, 'keys without a scancode are not sent');
  t.equal(keyboardLayoutOf('de-DE'), 0x0407);
  t.equal(keyboardLayoutOf('de-CH'), 0x0807);
  t.equal(keyboardLayoutOf('fr'), 0x040c);
  t.equal(keyboardLayoutOf('en-GB'), 0x0809);
  t.equal(keyboardLayoutOf('pt-Latn-BR'), 0x0416, 'a script subtag is skipped');
  t.equal(keyboardLayoutOf('xx-YY'), 0x0409, 'unknown: US');
  t.equal(keyboardLayoutOf('<script>'), 0x0409, 'malformed: US');
  t.equal(keyboardLayoutOf(null), 0x0409);
});
