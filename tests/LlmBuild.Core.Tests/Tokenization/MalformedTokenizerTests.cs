using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>
/// Issue 19, cause 1: every malformed value in a tokenizer file is one coded error naming the file and the field,
/// never a raw InvalidOperation/KeyNotFound/Format/RegexParse exception or an out-of-memory abort.
/// </summary>
[TestClass]
public sealed class MalformedTokenizerTests
{
    /// <summary>A valid tokenizer.json: a three-token BPE model, one added token, no normalizer.</summary>
    internal const string ValidTokenizerJson = """
        {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
         "added_tokens": [{"id": 3, "content": "<eos>", "special": true}],
         "normalizer": null, "pre_tokenizer": null, "decoder": null}
        """;

    internal static string Folder(params (string Name, string Text)[] files)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmb-badtok-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        foreach (var (name, text) in files) File.WriteAllText(Path.Combine(dir, name), text);
        return dir;
    }

    private static void AssertCoded(string code, string fragment, Action load)
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(load);
        Assert.AreEqual(code, e.Code, e.Message);
        StringAssert.Contains(e.Message, fragment);
    }

    [TestMethod]
    public void TheValidFileLoads()
    {
        var tokenizer = Tokenizer.Load(Folder(("tokenizer.json", ValidTokenizerJson)));
        CollectionAssert.AreEqual(new[] { 2, 3 }, tokenizer.Encode("ab<eos>"));
    }

    [TestMethod]
    [DataRow("""{"model": {"type": "BPE", "merges": []}}""", "model.vocab is missing; it must be an object")]
    [DataRow("""{"model": {"vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [[1, 2]]}}""", "model.merges[0][0] must be a string, found the number 1")]
    [DataRow("""{"model": {"vocab": {"a": 99999999999999}}}""", "model.vocab[\"a\"] must be an integer from 0 to 16777215, found the number 99999999999999")]
    [DataRow("""{"model": {"vocab": {"a": 2000000000}}}""", "from 0 to 16777215, found the number 2000000000")]
    [DataRow("""{"model": {"vocab": {"a": -1}}}""", "found the number -1")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": "<x>"}]}""", "added_tokens[0].id is missing; it must be an integer")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": 1, "content": 5}]}""", "added_tokens[0].content must be a string, found the number 5")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "normalizer": {"type": "Prepend"}}""", "normalizer.prepend is missing; it must be a string")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "normalizer": {"type": "Sequence", "normalizers": {}}}""", "normalizer.normalizers must be a list, found an object")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "decoder": {"type": "Strip", "content": "", "start": 1, "stop": 0}}""", "decoder.content must be a string of one character")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "pre_tokenizer": {"type": "Metaspace", "replacement": 9}}""", "pre_tokenizer.replacement must be a string, found the number 9")]
    [DataRow("""{"model": {"vocab": {"a": 0}}, "post_processor": {"type": "BertProcessing", "cls": ["[CLS]"], "sep": ["[SEP]", 1]}}""", "post_processor.cls[1] is missing")]
    [DataRow("""{"model": {"vocab": {"a": 0}, "byte_fallback": "yes"}}""", "model.byte_fallback must be true or false, found the string \"yes\"")]
    [DataRow("""{"model": 5}""", "model must be an object, found the number 5")]
    [DataRow("""[1, 2]""", "the document must be an object, found a list")]
    [DataRow("""{"model": {"vocab": {"a": 0}""", "not valid JSON")]
    public void MalformedTokenizerJsonIsACodedError(string json, string fragment)
    {
        string dir = Folder(("tokenizer.json", json));
        AssertCoded(ErrorCodes.BadTokenizerFile, fragment, () => Tokenizer.Load(dir));
        AssertCoded(ErrorCodes.BadTokenizerFile, "tokenizer.json", () => Tokenizer.Load(dir));
    }

    [TestMethod]
    public void AReplaceNormalizerWithABadRegexIsACodedError()
    {
        string dir = Folder(("tokenizer.json", """
            {"model": {"vocab": {"a": 0}}, "normalizer": {"type": "Replace", "pattern": {"Regex": "[z-a]"}, "content": "x"}}
            """));
        AssertCoded(ErrorCodes.UnsupportedTokenizerFeature, "normalizer.pattern: the pattern '[z-a]' is not a .NET regular expression", () => Tokenizer.Load(dir));
    }

    [TestMethod]
    [DataRow("""[]""", "the document must be an object, found a list")]
    [DataRow("""{"added_tokens_decoder": {"5": "str"}}""", "added_tokens_decoder[\"5\"] must be an object, found the string \"str\"")]
    [DataRow("""{"added_tokens_decoder": {"5": {"content": 7}}}""", "added_tokens_decoder[\"5\"].content must be a string, found the number 7")]
    [DataRow("""{"added_tokens_decoder": {"x": {"content": "<x>"}}}""", "has the key 'x', which is not a token id")]
    [DataRow("""{"added_tokens_decoder": {"99999999999": {"content": "<x>"}}}""", "which is not a token id")]
    [DataRow("""{"eos_token": {"content": 5}}""", "eos_token.content must be a string, found the number 5")]
    [DataRow("""{"eos_token": 5}""", "eos_token must be a string, found the number 5")]
    [DataRow("""{"clean_up_tokenization_spaces": "no"}""", "clean_up_tokenization_spaces must be true or false")]
    [DataRow("""{"tokenizer_class": ["Llama"]}""", "tokenizer_class must be a string, found a list")]
    public void MalformedTokenizerConfigIsACodedError(string config, string fragment)
    {
        string dir = Folder(("tokenizer.json", ValidTokenizerJson), ("tokenizer_config.json", config));
        AssertCoded(ErrorCodes.BadTokenizerFile, fragment, () => Tokenizer.Load(dir));
        StringAssert.Contains(Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir)).Message, "tokenizer_config.json");
    }

    [TestMethod]
    [DataRow("""{"a": "one"}""", "a b\n", "vocab.json: [\"a\"] must be an integer from 0 to 16777215, found the string \"one\"")]
    [DataRow("""{"a": 0, "b": 1, "ab": 2}""", "a  b\n", "merges.txt:1: merge 'a  b' is not two tokens separated by one space")]
    [DataRow("""{"a": 0, "b": 1}""", "a b\n", "merge #0 'a b' produces 'ab', which is not in the vocabulary")]
    [DataRow("""["a"]""", "", "vocab.json: the document must be an object, found a list")]
    public void MalformedVocabOrMergesIsACodedError(string vocab, string merges, string fragment)
    {
        string dir = Folder(("vocab.json", vocab), ("merges.txt", merges));
        AssertCoded(ErrorCodes.BadTokenizerFile, fragment, () => Tokenizer.Load(dir));
    }

    [TestMethod]
    [DataRow("""{"eos_token_id": "two"}""", ErrorCodes.BadGenerationConfig, "eos_token_id must be an integer")]
    [DataRow("""{"eos_token_id": [1, -4]}""", ErrorCodes.BadGenerationConfig, "eos_token_id[1] must be an integer from 0 to 16777215, found the number -4")]
    public void MalformedEosIdsAreCodedErrors(string generationConfig, string code, string fragment)
    {
        string dir = Folder(("tokenizer.json", ValidTokenizerJson), ("generation_config.json", generationConfig));
        AssertCoded(code, fragment, () => Tokenizer.Load(dir));
    }

    [TestMethod]
    [DataRow("""{"chat_template": [{"name": 5, "template": "x"}]}""", "chat_template[0].name must be a string, found the number 5")]
    [DataRow("""{"chat_template": [{"name": "default", "template": ["x"]}]}""", "chat_template[0].template must be a string, found a list")]
    [DataRow("""{"chat_template": 12}""", "chat_template must be a template (a string) or a list")]
    [DataRow("""{"chat_template": "{{ x }}", "eos_token": {"content": 5}}""", "eos_token.content must be a string, found the number 5")]
    public void MalformedChatTemplateEntriesAreCodedErrors(string config, string fragment)
    {
        string dir = Folder(("tokenizer_config.json", config));
        AssertCoded(ErrorCodes.BadTokenizerFile, fragment, () => ChatTemplate.Load(dir));
    }

    [TestMethod]
    public void ATokenizerFileThatIsAFolderIsACodedError()
    {
        string dir = Folder(("tokenizer.json", ValidTokenizerJson));
        Directory.CreateDirectory(Path.Combine(dir, "tokenizer_config.json"));
        AssertCoded(ErrorCodes.ReadFailed, "is a folder", () => Tokenizer.Load(dir));
    }

    [TestMethod]
    public void ASplitPatternThatBacktracksForeverIsACodedErrorWhenEncoding()
    {
        // (a+)+$ on "aaaa…b" backtracks exponentially; the match timeout turns it into a coded error.
        string dir = Folder(("tokenizer.json", """
            {"model": {"vocab": {"a": 0, "b": 1}, "merges": []},
             "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"}}
            """));
        var tokenizer = Tokenizer.Load(dir);
        AssertCoded(ErrorCodes.BadTokenizerFile, "took longer than", () => tokenizer.Encode(new string('a', 40) + "b"));
    }
}
