using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization;
using LlmBuild.Core.Tokenization.Chat;

namespace LlmBuild.Core.Tests.Tokenization;

[TestClass]
public sealed class ChatSessionTests
{
    /// <summary>Replies with scripted ids, one script per turn; records what it was asked to prefill.</summary>
    private sealed class ScriptedGenerator(params int[][] replies) : ITokenGenerator
    {
        private int _turn = -1;
        private int _position;
        public List<int[]> Prefills { get; } = [];
        public int Resets { get; private set; }
        public int Decodes { get; private set; }

        public int Prefill(ReadOnlySpan<int> ids)
        {
            Prefills.Add(ids.ToArray());
            _turn++;
            _position = 0;
            return Next();
        }

        public int Decode(int lastId)
        {
            Decodes++;
            return Next();
        }

        public void Reset() => Resets++;

        private int Next()
        {
            var script = replies[_turn];
            return _position < script.Length ? script[_position++] : 15; // "0" forever once the script is used up
        }
    }

    private static Tokenizer Qwen => TokenizerFixtures.Get("qwen2.5-7b-instruct");
    private static ChatTemplate Template => ChatTemplate.Load(TokenizerFixtures.Fixture("qwen2.5-7b-instruct"));
    private const int ImEnd = 151645, EndOfText = 151643;

    private static int[] Reply(string text, int eos = ImEnd) => [.. Qwen.Encode(text, addSpecialTokens: false), eos];

    [TestMethod]
    public void KeepsHistoryStreamsTextAndStopsAtEveryEosId()
    {
        var generator = new ScriptedGenerator(Reply("Hello there 🙂!"), Reply("你好", EndOfText));
        var session = new ChatSession(Qwen, Template, generator, new ChatSessionOptions { SeqLength = 512, SystemPrompt = "Be nice." });
        var streamed = new List<string>();
        var first = session.Ask("Hi", streamed.Add);
        Assert.AreEqual("Hello there 🙂!", first.Text);
        Assert.AreEqual(first.Text, string.Concat(streamed));
        Assert.IsFalse(streamed.Any(s => s.Contains('\uFFFD')));
        Assert.AreEqual(ChatStopReason.EndOfSequence, first.StopReason);
        Assert.AreEqual(Qwen.Encode("Hello there 🙂!", false).Length, first.GeneratedTokens);

        var second = session.Ask("And in Chinese?");
        Assert.AreEqual("你好", second.Text);
        Assert.AreEqual(ChatStopReason.EndOfSequence, second.StopReason);
        string expectedPrompt = "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there 🙂!<|im_end|>\n" +
            "<|im_start|>user\nAnd in Chinese?<|im_end|>\n<|im_start|>assistant\n";
        CollectionAssert.AreEqual(Qwen.Encode(expectedPrompt, false), generator.Prefills[1]);
        Assert.AreEqual(4, session.History.Count);
        Assert.AreEqual(2, generator.Resets);
    }

    [TestMethod]
    public void StopsAndClearsHistoryWhenSeqLengthIsReached()
    {
        var generator = new ScriptedGenerator([9707, 9707, 9707, 9707, 9707, 9707, 9707, 9707, 9707, 9707]);
        var session = new ChatSession(Qwen, Template, generator, new ChatSessionOptions { SeqLength = 40 });
        var turn = session.Ask("Hi");
        Assert.AreEqual(ChatStopReason.SeqLengthReached, turn.StopReason);
        Assert.AreEqual(40, turn.PromptTokens + turn.GeneratedTokens);
        Assert.AreEqual(turn.GeneratedTokens - 1, generator.Decodes);
        Assert.IsTrue(turn.HistoryClearedAfterTurn);
        Assert.AreEqual(0, session.History.Count);
    }

    [TestMethod]
    public void DropsHistoryWhenTheConversationNoLongerFits()
    {
        var generator = new ScriptedGenerator(Reply("A long answer that takes up a good part of the budget"), Reply("ok"));
        int firstPrompt = new ChatSession(Qwen, Template, generator, new ChatSessionOptions { SeqLength = 200 }).PromptIds("First question").Length;
        var session = new ChatSession(Qwen, Template, generator, new ChatSessionOptions { SeqLength = 200, MaxInputLength = firstPrompt + 5 });
        Assert.IsFalse(session.Ask("First question").HistoryDroppedBeforeTurn);
        var second = session.Ask("Second question");
        Assert.IsTrue(second.HistoryDroppedBeforeTurn);
        CollectionAssert.AreEqual(session.PromptIds("Second question", withHistory: false), generator.Prefills[1]);
        Assert.AreEqual(2, session.History.Count);
    }

    [TestMethod]
    public void APromptThatCannotFitIsACodedError()
    {
        var session = new ChatSession(Qwen, Template, new ScriptedGenerator(), new ChatSessionOptions { SeqLength = 20 });
        var e = Assert.ThrowsExactly<LlmBuildException>(() => session.Ask(string.Join(" ", Enumerable.Repeat("word", 50))));
        Assert.AreEqual(ErrorCodes.PromptTooLong, e.Code);
    }

    [TestMethod]
    public void HonoursMaxNewTokens()
    {
        var session = new ChatSession(Qwen, Template, new ScriptedGenerator([9707, 9707, 9707, 9707]), new ChatSessionOptions { SeqLength = 512, MaxNewTokens = 3 });
        var turn = session.Ask("Hi");
        Assert.AreEqual(ChatStopReason.MaxNewTokens, turn.StopReason);
        Assert.AreEqual("HelloHelloHello", turn.Text);
    }
}
