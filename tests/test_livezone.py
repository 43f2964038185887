import pytest

from headroom_core.livezone import DEFAULT_EXCLUDE, candidates, tool_allowed


def cands(shape, doc, **kw):
    return [(c.path, c.text, c.tool, c.live) for c in candidates(shape, doc, **kw)]


def anthropic_doc():
    return {"model": "claude", "system": [{"type": "text", "text": "sys"}], "messages": [
        {"role": "user", "content": "do it"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "t2", "name": "Read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "old bash"},
            {"type": "tool_result", "tool_use_id": "t2",
             "content": [{"type": "text", "text": "old read"}]}]},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "s1", "content": [
                {"type": "web_search_result", "title": "t", "url": "u",
                 "encrypted_content": "e"}]},
            {"type": "tool_use", "id": "t3", "name": "Grep", "input": {}},
            {"type": "tool_use", "id": "t4", "name": "mcp__x__y", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t3", "content": [
                {"type": "text", "text": "grep 1"},
                {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                {"type": "text", "text": "grep 2"}], "cache_control": {"type": "ephemeral"}},
            {"type": "tool_result", "tool_use_id": "t4", "content": "mcp out", "is_error": True},
            {"type": "tool_result", "tool_use_id": "unknown", "content": "orphan"},
            {"type": "text", "text": "user typed this"},
            {"type": "document", "source": {"type": "text", "data": "doc"}},
            {"type": "compaction", "content": "summary"}]},
    ]}


def test_anthropic_live_zone_is_the_newest_user_message():
    assert cands("anthropic", anthropic_doc()) == [
        (("messages", 2, "content", 0, "content"), "old bash", "Bash", False),
        (("messages", 2, "content", 1, "content", 0, "text"), "old read", "Read", False),
        (("messages", 4, "content", 0, "content", 0, "text"), "grep 1", "Grep", True),
        (("messages", 4, "content", 0, "content", 2, "text"), "grep 2", "Grep", True),
        (("messages", 4, "content", 1, "content"), "mcp out", "mcp__x__y", True),
        (("messages", 4, "content", 2, "content"), "orphan", None, True),
    ]


def test_anthropic_candidate_positions_and_flags():
    got = candidates("anthropic", anthropic_doc())
    grep2 = got[3]
    assert (grep2.index, grep2.block, grep2.part, grep2.call_id) == (4, 0, 2, "t3")
    assert not grep2.is_error
    assert got[4].is_error and got[4].part is None and got[4].call_id == "t4"


def test_anthropic_no_live_zone_when_newest_message_is_the_assistant():
    doc = anthropic_doc()
    doc["messages"].append({"role": "assistant", "content": "prefill"})
    assert all(not live for *_, live in cands("anthropic", doc))


def test_anthropic_consecutive_user_messages_after_the_assistant_are_live():
    doc = anthropic_doc()
    last = doc["messages"].pop()
    doc["messages"] += [{"role": "user", "content": last["content"][:1]},
                        {"role": "user", "content": [{"type": "text", "text": "more"}]}]
    assert [live for *_, live in cands("anthropic", doc)] == [False, False, True, True]


def test_anthropic_cache_control_does_not_move_the_live_zone():
    doc = anthropic_doc()
    doc["messages"][2]["content"][0]["cache_control"] = {"type": "ephemeral"}
    assert [live for *_, live in cands("anthropic", doc)] == [False, False, True, True, True,
                                                                 True]


@pytest.mark.parametrize("doc", [None, [], {"messages": "x"}, {"messages": [1, "a", None]},
                                 {"messages": [{"role": "user", "content": [1, {"type": 2}]}]},
                                 {"messages": [{"role": "user", "content": [
                                     {"type": "tool_result", "content": 5}]}]}])
def test_malformed_documents_yield_nothing(doc):
    for shape in ("anthropic", "chat", "responses", "responses_ws", "other"):
        assert candidates(shape, doc) == []


def chat_doc():
    return {"model": "gpt", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "old"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "grep", "arguments": "{}"}},
            {"id": "c3", "type": "custom", "custom": {"name": "apply", "input": "x"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": [
            {"type": "text", "text": "part a"}, {"type": "image_url", "image_url": {}}]},
        {"role": "tool", "tool_call_id": "c3", "content": "applied"},
    ]}


def test_chat_trailing_tool_messages_are_live():
    assert cands("chat", chat_doc()) == [
        (("messages", 3, "content"), "old", "shell", False),
        (("messages", 5, "content", 0, "text"), "part a", "grep", True),
        (("messages", 6, "content"), "applied", "apply", True),
    ]


def test_chat_user_text_is_never_a_candidate():
    doc = chat_doc()
    doc["messages"].append({"role": "user", "content": [{"type": "text", "text": "typed"}]})
    assert [t for _, t, _, _ in cands("chat", doc)] == ["old", "part a", "applied"]


def responses_doc():
    return {"model": "gpt-5", "instructions": "x", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": "e"},
        {"type": "function_call", "call_id": "a", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "old"},
        {"role": "assistant", "content": "thinking aloud"},
        {"type": "custom_tool_call", "call_id": "b", "name": "apply_patch", "input": "p"},
        {"type": "local_shell_call", "call_id": "c", "action": {}},
        {"type": "function_call", "call_id": "d", "name": "exec_command", "arguments": "{}"},
        {"type": "custom_tool_call_output", "call_id": "b", "output": "patched"},
        {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_text", "text": "shell text"},
            {"type": "input_image", "image_url": "data:"}]},
        {"type": "function_call_output", "call_id": "d", "output": "exec out"},
        {"type": "message", "role": "user", "content": "typed"},
    ]}


def test_responses_trailing_outputs_after_the_last_model_item_are_live():
    assert cands("responses", responses_doc()) == [
        (("input", 3, "output"), "old", "shell", False),
        (("input", 8, "output"), "patched", "apply_patch", True),
        (("input", 9, "output", 0, "text"), "shell text", "local_shell", True),
        (("input", 10, "output"), "exec out", "exec_command", True),
    ]


def test_responses_reasoning_item_ends_the_sent_prefix():
    doc = responses_doc()
    doc["input"].append({"type": "reasoning", "summary": []})
    assert all(not live for *_, live in cands("responses", doc))


def test_responses_string_input_has_no_candidates():
    assert candidates("responses", {"input": "hello"}) == []


def test_websocket_create_every_output_is_live_and_named_by_the_caller():
    doc = {"type": "response.create", "model": "gpt-5", "previous_response_id": "r1", "input": [
        {"type": "function_call_output", "call_id": "x", "output": "one"},
        {"type": "custom_tool_call_output", "call_id": "y", "output": "two"},
        {"type": "function_call_output", "call_id": "z", "output": "three"},
    ]}
    got = cands("responses_ws", doc, tool_names={"x": "shell", "y": "apply_patch"})
    assert got == [(("input", 0, "output"), "one", "shell", True),
                   (("input", 1, "output"), "two", "apply_patch", True),
                   (("input", 2, "output"), "three", None, True)]
    # Over plain HTTP, the same items without their calls are live too (nothing model-made).
    assert [live for *_, live in cands("responses", doc)] == [True, True, True]


def test_websocket_nested_response_envelope():
    doc = {"type": "response.create", "response": {"input": [
        {"type": "function_call_output", "call_id": "x", "output": "one"}]}}
    assert cands("responses_ws", doc) == [(("response", "input", 0, "output"), "one", None, True)]


def test_document_names_win_over_supplied_names():
    doc = {"input": [{"type": "function_call", "call_id": "x", "name": "shell"},
                     {"type": "function_call_output", "call_id": "x", "output": "o"}]}
    assert cands("responses_ws", doc, tool_names={"x": "read_file"})[0][2] == "shell"


@pytest.mark.parametrize("tool", ["Read", "Edit", "Write", "MultiEdit", "NotebookEdit",
                                  "NotebookRead"])
def test_file_tools_are_excluded_by_default(tool):
    assert tool in DEFAULT_EXCLUDE
    assert not tool_allowed(tool)


@pytest.mark.parametrize("tool", ["Bash", "Grep", "Glob", "WebFetch", "BashOutput", "shell",
                                  "exec_command", "local_shell", "unified_exec", "mcp__gh__search",
                                  None])
def test_shell_search_fetch_and_unknown_tools_are_candidates(tool):
    assert tool_allowed(tool)


def test_include_and_exclude_patterns():
    assert tool_allowed("mcp__gh__x", include=["mcp__*"])
    assert not tool_allowed("Bash", include=["mcp__*"])
    assert not tool_allowed(None, include=["*"])
    assert not tool_allowed("mcp__gh__x", exclude=["mcp__gh__*"])
    assert tool_allowed("Read", exclude=())
    assert not tool_allowed("bash", include=["Bash"])  # case-sensitive, like tool names


def test_websocket_full_input_on_a_fresh_connection_keeps_history_frozen():
    """A reconnecting Codex resends the whole input: earlier outputs were sent (and cached)
    already, so only outputs after the last model item are live, as over HTTP."""
    from headroom_core.livezone import candidates

    doc = {"type": "response.create", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "old"},
        {"type": "function_call", "call_id": "c2", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "new"},
    ]}
    got = [(c.text, c.live) for c in candidates("responses_ws", doc)]
    assert got == [("old", False), ("new", True)]
    incremental = {"type": "response.create", "input": [doc["input"][4]]}
    assert [(c.text, c.live, c.tool) for c in candidates(
        "responses_ws", incremental, tool_names={"c2": "shell"})] == [("new", True, "shell")]
