pub async fn _placeholder() {}
