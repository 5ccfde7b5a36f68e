using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Tokenization;

[TestClass]
public sealed class ChatTemplateTests
{
    private static List<ChatMessage> Messages(JsonElement list) =>
        list.EnumerateArray().Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();

    [TestMethod]
    public void RendersTheQwenGoldensExactlyAndTheirIdsMatch()
    {
        var template = ChatTemplate.Load(TokenizerFixtures.Fixture("qwen2.5-7b-instruct"));
        var tokenizer = TokenizerFixtures.Get("qwen2.5-7b-instruct");
        int count = 0;
        foreach (var c in TokenizerFixtures.Goldens("tokens-qwen2.5.json").GetProperty("chats").EnumerateArray())
        {
            string rendered = template.Render(Messages(c.GetProperty("messages")), c.GetProperty("add_generation_prompt").GetBoolean());
            Assert.AreEqual(c.GetProperty("rendered").GetString(), rendered);
            CollectionAssert.AreEqual(TokenizerFixtures.Ints(c.GetProperty("ids")), tokenizer.Encode(rendered, addSpecialTokens: false));
            count++;
        }
        Assert.AreEqual(4, count);
    }

    [TestMethod]
    public void RendersLlama32WithTheClockDate()
    {
        var template = ChatTemplate.Load(TokenizerFixtures.Fixture("llama3.2-3b-instruct"));
        template.Clock = () => new DateTime(2025, 1, 5);
        string rendered = template.Render([new("system", "  You are terse. "), new("user", "Hi\n")], addGenerationPrompt: true);
        Assert.AreEqual(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 05 Jan 2025\n\n" +
            "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            rendered);
    }

    [TestMethod]
    public void RendersMistralAndEnforcesAlternation()
    {
        var template = ChatTemplate.Load(TokenizerFixtures.Fixture("mistral-7b-instruct"));
        Assert.AreEqual("<s>[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]",
            template.Render([new("user", "Hi"), new("assistant", "Hello"), new("user", "Bye")], addGenerationPrompt: true));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => template.Render([new("user", "a"), new("user", "b")], true));
        Assert.AreEqual(ErrorCodes.ChatTemplateRender, e.Code);
        StringAssert.Contains(e.Message, "Conversation roles must alternate");
    }

    [TestMethod]
    public void RendersMiniCpmAndGemma3()
    {
        var minicpm = ChatTemplate.Load(TokenizerFixtures.Fixture("minicpm3-4b"));
        Assert.AreEqual("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            minicpm.Render([new("system", "S"), new("user", "Hi")], addGenerationPrompt: true));
        var gemma = ChatTemplate.Load(TokenizerFixtures.Fixture("gemma3-4b-it"));
        Assert.AreEqual("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nMore<end_of_turn>\n<start_of_turn>model\n",
            gemma.Render([new("system", "Be brief."), new("user", " Hi "), new("assistant", "Hello"), new("user", "More")], addGenerationPrompt: true));
    }

    [TestMethod]
    public void RendersQwen3WithThinkingHistoryAndTheEnableThinkingSwitch()
    {
        var template = ChatTemplate.Load(TokenizerFixtures.Fixture("qwen3-4b"));
        List<ChatMessage> chat = [new("user", "Hi"), new("assistant", "<think>\nhmm\n</think>\n\nHello"), new("user", "Bye")];
        Assert.AreEqual("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            template.Render(chat, addGenerationPrompt: true));
        Assert.AreEqual("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            template.Render([new("user", "Hi")], true, new Dictionary<string, object?> { ["enable_thinking"] = false }));
    }

    [TestMethod]
    public void MissingTemplateIsACodedError()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ChatTemplate.Load(TokenizerFixtures.Fixture("llama2-7b-chat")));
        Assert.AreEqual(ErrorCodes.ChatTemplateNotFound, e.Code);
    }
}
