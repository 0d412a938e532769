import java.io.File;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

import stillmotion.client.ApiClient;
import stillmotion.client.ApiException;
import stillmotion.client.api.JobsApi;
import stillmotion.client.api.PlanApi;
import stillmotion.client.model.Interpolator;
import stillmotion.client.model.JobOut;
import stillmotion.client.model.JobStatus;
import stillmotion.client.model.PlanOut;
import stillmotion.client.model.ResolvedRequestOut;

/**
 * One video through the generated Java client: plan a request, submit it with every numeric field set, poll
 * the job to its end, download the video; then a two-expert job with a last frame and the second guidance. Usage: {@code java GenerateVideo BASE_URL IMAGE OUTPUT.mp4}; the
 * bearer token, when the server has one, comes from STILLMOTION_API_TOKEN. Prints the job as JSON at the end.
 */
public class GenerateVideo {
    static final String MODEL = "tiny-i2vgen-xl"; // built in, no download (its video is noise)
    static final String TWO_EXPERTS = "tiny-wan2.2-i2v-a14b"; // the same, with two experts and a last frame

    public static void main(String[] args) throws Exception {
        ApiClient client = new ApiClient();
        client.updateBaseUri(args[0]);
        String token = System.getenv("STILLMOTION_API_TOKEN");
        if (token != null && !token.isBlank()) {
            client.setRequestInterceptor(request -> request.header("Authorization", "Bearer " + token));
        }
        JobsApi jobs = new JobsApi(client);
        File image = new File(args[1]);

        // The plan takes interpolate_fps (the other way to ask for interpolation than the job's `interpolate`).
        // Builders (useSingleRequestParameter): a field the server adds later does not change this code.
        PlanOut plan = new PlanApi(client).planJob(PlanApi.APIPlanJobRequest.newBuilder()
                .prompt("waves roll in").model(MODEL).height(64).width(96).numFrames(8).numInferenceSteps(2)
                .guidanceScale(new BigDecimal("7.5")).fps(6).seed(4_000_000_000L).interpolateFps(12)
                .interpolator(Interpolator.MINTERPOLATE).image(image).build());
        check(plan.getFits(), "the plan fits");
        check(plan.getRequest().getInterpolate() == 2, "interpolate_fps 12 at 6 fps is factor 2");

        // Every numeric field of a job: size, frames, steps, guidance, fps, a seed over 2^31, interpolation.
        JobOut job = follow(jobs, jobs.submitJob(JobsApi.APISubmitJobRequest.newBuilder()
                .image(image).prompt("waves roll in").model(MODEL).height(64).width(96).numFrames(8)
                .numInferenceSteps(2).guidanceScale(new BigDecimal("7.5")).fps(6).seed(4_000_000_000L)
                .interpolate(2).interpolator(Interpolator.MINTERPOLATE).build()));
        ResolvedRequestOut ran = job.getRequest();
        check(ran.getHeight() == 64 && ran.getWidth() == 96, "the size asked for");
        check(ran.getNumFrames() == 8 && ran.getNumInferenceSteps() == 2, "frames and steps asked for");
        check(ran.getFps() == 6 && ran.getSeed() == 4_000_000_000L, "fps and seed asked for");
        check(ran.getGuidanceScale().compareTo(new BigDecimal("7.5")) == 0, "guidance asked for");
        check(ran.getInterpolate() == 2, "interpolation asked for");

        // A two-expert model's own fields: the second guidance, the last frame (a second file part), the fast
        // choice off, LoRAs as JSON text (none here).
        JobOut experts = follow(jobs, jobs.submitJob(JobsApi.APISubmitJobRequest.newBuilder()
                .image(image).lastImage(image).prompt("waves roll in").model(TWO_EXPERTS).height(48).width(80)
                .numFrames(9).numInferenceSteps(2).guidanceScale2(new BigDecimal("2.5")).fast(false)
                .loras("[]").seed(7L).build()));
        ResolvedRequestOut second = experts.getRequest();
        check(second.getGuidanceScale2().compareTo(new BigDecimal("2.5")) == 0, "guidance_scale_2 asked for");
        check(second.getLastImage() != null && !second.getFast(), "the last frame taken, fast off");

        File video = jobs.getJobVideo(job.getId());
        Files.move(video.toPath(), Path.of(args[2]), StandardCopyOption.REPLACE_EXISTING);
        check(Files.size(Path.of(args[2])) > 0, "the video has bytes");
        System.out.println(client.getObjectMapper().writeValueAsString(job));
    }

    /** Poll the job to its end (or follow GET /jobs/{id}/events with an SSE client: docs/api.md). */
    static JobOut follow(JobsApi jobs, JobOut job) throws ApiException, InterruptedException {
        while (job.getStatus() == JobStatus.QUEUED || job.getStatus() == JobStatus.RUNNING) {
            Thread.sleep(500);
            job = jobs.getJob(job.getId());
        }
        check(job.getStatus() == JobStatus.SUCCEEDED, "the job succeeded: " + job.getError());
        return job;
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("expected: " + what);
        }
    }
}
